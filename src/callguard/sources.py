"""The legal sources callguard's rules implement: one home, cited by key.

Each rule's docstring names the keys it implements (``L5_2018_ART1_C5``,
...); ``callguard policy sources`` prints this table. A quote is the primary
text's own words (the Gazzetta Ufficiale writes accents as apostrophes);
``reading`` says how callguard reads it where the text leaves room, always
on the side that denies rather than wrongly allows; ``verified`` is False
where the primary text could not be read and the quote comes from a
reproduction or the register's own pages.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SOURCES", "Source", "cite"]


@dataclass(frozen=True, slots=True)
class Source:
    """One article (or comma) of one act, where it was published, and its words."""

    key: str
    act: str
    article: str
    published: str
    quote: str
    url: str
    reading: str = ""
    verified: bool = True

    def citation(self) -> str:
        return f"{self.act}, {self.article} ({self.published})"


_GU_CODICE = (
    "Codice di condotta per le attivita' di telemarketing e teleselling, Garante provv. n. 148 del 7 marzo 2024"
)
_GU_CODICE_PUB = "GU n. 73 del 27 marzo 2024, 24A01602; in force 28 September 2024"
_L5 = "Legge 11 gennaio 2018, n. 5"
_L5_PUB = "GU n. 28 del 3 febbraio 2018, 18G00021"
_DPR26 = "DPR 27 gennaio 2022, n. 26"
_DPR26_PUB = "GU n. 74 del 29 marzo 2022, 22G00033"

SOURCES: dict[str, Source] = {
    source.key: source
    for source in (
        Source(
            "CODICE_CONDOTTA",
            _GU_CODICE,
            "art. 7 c. 1",
            _GU_CODICE_PUB,
            "Chiunque effettui attivita' di telemarketing/teleselling (inclusi contact center e agenzie) [...] e' "
            "tenuto a iscriversi al Registro degli operatori di comunicazione (\u00abROC\u00bb) [...] comunicando, "
            "altresi', tutte le numerazioni telefoniche messe a disposizione del pubblico e utilizzate per i servizi "
            "di telemarketing e teleselling.",
            "https://www.gazzettaufficiale.it/ (caricaArticolo, 24A01602, art. 7)",
            "Operators must be on the certification list, active and in term; the numbers they show are the "
            "caller IDs they declared. The calling hours (Mon-Fri 09-20, Saturday and pre-holiday 10-19, never "
            "on Sundays or holidays) are attributed to this code by every summary; the article was not read.",
        ),
        Source(
            "CODICE_CONDOTTA_ART10_C2",
            _GU_CODICE,
            "art. 10 c. 2",
            _GU_CODICE_PUB,
            "Il fornitore, laddove l'interessato non abbia chiesto espressamente la chiamata o la richiamata ai "
            "sensi del successivo comma 3, puo' chiamare per finalita' di telemarketing o teleselling le utenze "
            "telefoniche non presenti negli elenchi telefonici pubblici per le quali risulti presente un idoneo "
            "consenso e le utenze telefoniche presenti negli elenchi telefonici pubblici che non siano iscritte "
            "al RPO.",
            "https://www.gazzettaufficiale.it/ (caricaArticolo, 24A01602, art. 10)",
            "A clear register result is enough only for a number in the public directories; any other number "
            "needs a consent of the calling client. A contract is not a consent: the comma names only "
            "'un idoneo consenso'. A missing or too old directory extract counts as 'not listed'.",
        ),
        Source(
            "CODICE_CONDOTTA_FILIERA",
            _GU_CODICE,
            "art. 6, 7, 14, 17",
            _GU_CODICE_PUB,
            "(not read) The client (committente) uses only suppliers bound to it by contract and adhering to the "
            "code, and answers for its supply chain, sub-suppliers and suppliers with several mandates included.",
            "https://www.gazzettaufficiale.it/ (caricaArticolo, 24A01602, art. 6, 7, 14, 17)",
            "A call centre calls for a client only under a mandate of that client in force on the decision's "
            "Italian day (callguard mandates load); none gives operator_not_mandated.",
            verified=False,
        ),
        Source(
            "RPO_FAQ_REQUEST",
            "Registro pubblico delle opposizioni, FAQ for operators",
            "FAQ",
            "registrodelleopposizioni.it/operatore/domande-frequenti-operatore/",
            "Nel caso di chiamate su richiesta del cittadino non e' necessario consultare preventivamente il RPO. "
            "Fermo restando che tale richiesta deve essere intesa una tantum e non puo' essere estensivamente "
            "interpretata come consenso al telemarketing.",
            "https://registrodelleopposizioni.it/operatore/domande-frequenti-operatore/",
            "A call request lifts the register and directory checks for the one client asked, for one allowed "
            "call and a short time (2 days without an end); it is no consent to automated calls.",
        ),
        Source(
            "AGCOM_CLI_SPOOFING",
            "AGCOM, delibere 106/25/CONS (30 April 2025) and 271/25/CONS (6 November 2025)",
            "caller-ID rules for calls from abroad",
            "agcom.it",
            "(not read; AGCOM's announcements as reported) Carriers block calls from abroad that show an Italian "
            "fixed number from 19 August 2025, and an Italian mobile number outside real roaming from 19 November "
            "2025.",
            "https://www.agcom.it/",
            "An operator calling from outside Italy that shows a +39 number is denied caller_id_foreign_origin from "
            "those days (numbers libphonenumber does not know as mobile count as fixed: the earlier day); real "
            "roaming is not assumed for a call centre.",
            verified=False,
        ),
        Source(
            "L5_2018_ART1",
            _L5,
            "art. 1 c. 2",
            _L5_PUB,
            "[...] tutti gli interessati che vogliano opporsi al trattamento delle proprie numerazioni telefoniche "
            "effettuato mediante operatore con l'impiego del telefono per fini di invio di materiale pubblicitario "
            "o di vendita diretta, ovvero per il compimento di ricerche di mercato o di comunicazione commerciale.",
            "https://www.gazzettaufficiale.it/ (18G00021, art. 1)",
            "The register covers advertising, direct sales, market research and commercial communication. "
            "Statistical surveys are not named; on the safe side the register applies to them too.",
            verified=False,
        ),
        Source(
            "L5_2018_ART1_C5",
            _L5,
            "art. 1 c. 5",
            _L5_PUB,
            "Con l'iscrizione al registro [...] si intendono revocati tutti i consensi precedentemente espressi "
            "[...] ad eccezione di quelli rilasciati nell'ambito di specifici rapporti contrattuali in essere, "
            "ovvero cessati da non piu' di trenta giorni, aventi ad oggetto la fornitura di beni o servizi [...]",
            "https://www.gazzettaufficiale.it/ (18G00021, art. 1)",
            "Registering revokes earlier consents: only a consent given provably after the registration counts. "
            "A contract of this client in force, or ended not more than 30 days ago, lifts the register (ended "
            "30 days ago counts, 31 does not). The register's citizen FAQ words it 'cessato da meno di trenta "
            "giorni'; the statute's wording prevails, and contract_grace_days = 29 gives the FAQ's reading.",
            verified=False,
        ),
        Source(
            "L5_2018_ART2_C1",
            _L5,
            "art. 2 c. 1",
            _L5_PUB,
            "Tutti gli operatori che svolgono attivita' di call center rivolte a numerazioni nazionali fisse o "
            "mobili devono garantire la piena attuazione dell'obbligo di presentazione dell'identificazione della "
            "linea chiamante [...] due codici o prefissi specifici, atti a identificare e distinguere in modo "
            "univoco le chiamate telefoniche finalizzate ad attivita' statistiche da quelle finalizzate al "
            "compimento di ricerche di mercato e ad attivita' di pubblicita', vendita e comunicazione commerciale "
            "[...] oppure presentano l'identita' della linea a cui possono essere contattati.",
            "https://www.gazzettaufficiale.it/ (18G00021, art. 2)",
            "Every call-centre call, service calls included, shows a callable caller ID. AGCOM (delibera "
            "60/18/CIR) assigned 0843 to statistical surveys and 0844 to market research, advertising, sales and "
            "commercial communication; a callable geographic or mobile number is the law's alternative.",
        ),
        Source(
            "DPR26_2022_ART8_C2",
            _DPR26,
            "art. 8 c. 2",
            _DPR26_PUB,
            "La consultazione del registro da parte di ciascun operatore ha efficacia pari a quindici giorni per i "
            "trattamenti di dati per fini di invio di materiale pubblicitario o di vendita diretta o per il "
            "compimento di ricerche di mercato o di comunicazione commerciale, mediante l'impiego del telefono, "
            "con o senza operatore [...]",
            "https://www.gazzettaufficiale.it/ (22G00033, art. 8)",
            "A result of day D is used on days D to D+14 and is stale from D+15 (Italian days).",
        ),
        Source(
            "RPO_VALIDITY",
            "Registro pubblico delle opposizioni, pages for operators",
            "For the operator",
            "registrodelleopposizioni.it/en/for-operator/",
            "[...] check the contact lists, which are valid for 15 days for the Telephone RPO and 30 days for the "
            "Postal RPO.",
            "https://registrodelleopposizioni.it/en/for-operator/",
            "Read with DPR26_2022_ART8_C2: day D is the first of the 15 days.",
        ),
        Source(
            "RPO_FAQ_CONTROLLERS",
            "Registro pubblico delle opposizioni, FAQ for operators",
            "FAQ",
            "registrodelleopposizioni.it/operatore/domande-frequenti-operatore/",
            "L'obbligo di consultare il RPO e' in capo a ogni singolo titolare autonomo del trattamento, il quale "
            "consultando il RPO potrebbe ottenere risultati differenti da altri soggetti alla luce delle revoche "
            "selettive.",
            "https://registrodelleopposizioni.it/operatore/domande-frequenti-operatore/",
            "A result loaded for every client ('*') may only deny: an opposed '*' result counts for every client, "
            "a clear '*' result is nobody's check.",
        ),
        Source(
            "CODICE_PRIVACY_ART130_C1_C2",
            "D.lgs. 30 giugno 2003, n. 196 (Codice in materia di protezione dei dati personali)",
            "art. 130 c. 1-2",
            "GU n. 174 del 29 luglio 2003, 003G0218, as amended",
            "[...] l'uso di sistemi automatizzati di chiamata o di comunicazione di chiamata senza l'intervento di "
            "un operatore per l'invio di materiale pubblicitario o di vendita diretta o per il compimento di "
            "ricerche di mercato o di comunicazione commerciale e' consentito con il consenso del contraente o "
            "utente.",
            "https://www.gazzettaufficiale.it/ (003G0218, art. 130)",
            "Automated calls need the callee's consent for the calling client whatever the register says. "
            "Statistical surveys are not named; on the safe side the shipped policy applies the rule to them.",
            verified=False,
        ),
        Source(
            "GARANTE_SILENT_CALLS_BLOCK",
            "Garante per la protezione dei dati personali, provvedimento generale sulle c.d. chiamate mute, "
            "delibera n. 83 del 20 febbraio 2014",
            "operative part",
            "GU n. 79 del 4 aprile 2014, 14A02670",
            "(operative part not read) After a silent call, no new call to that number for some days, and the "
            "next call only with an operator available.",
            "https://www.gazzettaufficiale.it/ (14A02670)",
            "Summaries disagree on the days (5 or 7): callguard blocks 7 days, the longer, and marks the next "
            "allow with requires_operator.",
            verified=False,
        ),
        Source(
            "GARANTE_SILENT_CALLS_RATE",
            "Garante per la protezione dei dati personali, provvedimento generale sulle c.d. chiamate mute, "
            "delibera n. 83 del 20 febbraio 2014",
            "operative part",
            "GU n. 79 del 4 aprile 2014, 14A02670",
            "(operative part not read) Not more than 3 silent calls for every 100 calls answered ('andate a buon "
            "fine'), per campaign.",
            "https://www.gazzettaufficiale.it/ (14A02670)",
            "Counted per campaign over window_days of reported outcomes; silent and abandoned outcomes over "
            "answered ones (the smaller denominator: the stricter rate).",
            verified=False,
        ),
        Source(
            "L151_2025",
            "Legge 8 ottobre 2025, n. 151 (festa nazionale di San Francesco d'Assisi)",
            "art. 1 c. 1-2",
            "GU n. 236 del 10 ottobre 2025, 25G00153; in force 1 January 2026",
            "[...] e' istituita la festa nazionale di San Francesco d'Assisi, da celebrare il 4 ottobre di ogni anno.",
            "https://www.normattiva.it/uri-res/N2Ls?urn:nir:stato:legge:2025-10-08;151",
            "4 October is a national holiday from 2026 on (L. 260/1949 art. 2 as amended).",
        ),
    )
}


def cite(key: str) -> Source:
    """The source a rule cites; a KeyError names a citation nobody wrote down."""
    return SOURCES[key]
