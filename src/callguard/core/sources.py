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
    #: a few words for a table (the regulator's report); :meth:`citation` is the full one
    short: str
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
_TSR = "Telemarketing Sales Rule (FTC)"
_TSR_PUB = "Code of Federal Regulations, title 16, part 310 (eCFR)"
_TCPA = "Rules implementing the Telephone Consumer Protection Act (FCC)"
_TCPA_PUB = "Code of Federal Regulations, title 47, section 64.1200 (eCFR)"

SOURCES: dict[str, Source] = {
    source.key: source
    for source in (
        Source(
            "CODICE_CONDOTTA",
            "Codice di condotta 2024, art. 7 c. 1",
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
            "Codice di condotta 2024, art. 10 c. 2",
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
            "Codice di condotta 2024, art. 6, 7, 14, 17",
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
            "RPO, FAQ for operators (calls asked for)",
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
            "AGCOM del. 106/25/CONS, 271/25/CONS",
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
            "L. 5/2018, art. 1 c. 2",
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
            "L. 5/2018, art. 1 c. 5",
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
            "L. 5/2018, art. 2 c. 1",
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
            "DPR 26/2022, art. 8 c. 2",
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
            "RPO, validity of a consultation",
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
            "RPO, FAQ for operators (each controller)",
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
            "D.lgs. 196/2003, art. 130 c. 1-2",
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
            "Garante provv. 83/2014 (block after a silent call)",
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
            "Garante provv. 83/2014 (silent-call rate)",
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
            "L. 151/2025, art. 1",
            "Legge 8 ottobre 2025, n. 151 (festa nazionale di San Francesco d'Assisi)",
            "art. 1 c. 1-2",
            "GU n. 236 del 10 ottobre 2025, 25G00153; in force 1 January 2026",
            "[...] e' istituita la festa nazionale di San Francesco d'Assisi, da celebrare il 4 ottobre di ogni anno.",
            "https://www.normattiva.it/uri-res/N2Ls?urn:nir:stato:legge:2025-10-08;151",
            "4 October is a national holiday from 2026 on (L. 260/1949 art. 2 as amended).",
        ),
        # --- the United States pack (policies/us.toml). The eCFR itself could not be read from here:
        # the quotes are the CFR's words as reproduced by the pages and documents named in ``reading``,
        # so each is marked verified=False until someone compares it with ecfr.gov.
        Source(
            "TSR_DNC_REGISTRY",
            "16 CFR 310.4(b)(1)(iii)(B)",
            _TSR,
            "16 CFR 310.4(b)(1)(iii)(B)",
            _TSR_PUB,
            "It is an abusive telemarketing act or practice [...] for a telemarketer to engage in [...] "
            "initiating any outbound telephone call to a person when [...] that person's telephone number is on "
            'the "do-not-call" registry, maintained by the Commission [...] unless the seller [...] (1) can '
            "demonstrate that the seller has obtained the express agreement, in writing, of such person to place "
            "calls to that person [...]; or (2) can demonstrate that the seller has an established business "
            "relationship with such person, and that person has not stated that he or she does not wish to "
            "receive outbound telephone calls under paragraph (b)(1)(iii)(A).",
            "https://www.ecfr.gov/current/title-16/chapter-I/subchapter-C/part-310/section-310.4",
            "A number on the National Do Not Call Registry (register us-dnc) is not called for telemarketing "
            "unless this client holds a written agreement (basis consent) or an established business "
            "relationship (ebr_transaction, ebr_inquiry). Wording from the FTC's business guidance (donotcall.gov "
            "FAQ, 'express agreement, in writing'); the paragraph's full text was not read.",
            verified=False,
        ),
        Source(
            "TSR_SAFE_HARBOR",
            "16 CFR 310.4(b)(3)(iv)",
            _TSR,
            "16 CFR 310.4(b)(3)(iv)",
            _TSR_PUB,
            "[...] uses a process to prevent telemarketing to any telephone number on any list established "
            'pursuant to [...] (b)(1)(iii)(B) of this section, employing a version of the "do-not-call" '
            "registry obtained from the Commission no more than thirty-one (31) days prior to the date any call "
            "is made [...]",
            "https://www.ecfr.gov/current/title-16/chapter-I/subchapter-C/part-310/section-310.4",
            "A registry download of day D is used on days D to D+31 and is stale from D+32 (stale_after_days = 31, "
            "days of the pack's time zone, America/New_York: the latest calendar day of the 50 states' zones but "
            "for none, so the age is never understated). Quoted as reproduced in public compliance documents "
            "that cite the eCFR.",
            verified=False,
        ),
        Source(
            "TCPA_DNC",
            "47 CFR 64.1200(c)(2)",
            _TCPA,
            "47 CFR 64.1200(c)(2) and (c)(2)(i)(D)",
            _TCPA_PUB,
            "No person or entity shall initiate any telephone solicitation to: [...] (2) A residential telephone "
            "subscriber who has registered his or her telephone number on the national do-not-call registry [...] "
            "(D) [...] employing a version of the national do-not-call registry obtained from the administrator "
            "of the registry no more than 31 days prior to the date any call is made [...]",
            "https://www.ecfr.gov/current/title-47/chapter-I/subchapter-B/part-64/subpart-L/section-64.1200",
            "The FCC's rule for the same registry, with the same 31 days. Quoted from a document that cites the "
            "current eCFR (retrieved 2026-09-12).",
            verified=False,
        ),
        Source(
            "TSR_EBR",
            "16 CFR 310.2(q)",
            _TSR,
            "16 CFR 310.2(q)",
            _TSR_PUB,
            "Established business relationship means a relationship between a seller and a consumer based on: "
            "(1) the consumer's purchase, rental, or lease of the seller's goods or services or a financial "
            "transaction between the consumer and seller, within the eighteen (18) months immediately preceding "
            "the date of a telemarketing call; or (2) the consumer's inquiry or application regarding a product "
            "or service offered by the seller, within the three (3) months immediately preceding the date of a "
            "telemarketing call.",
            "https://www.ecfr.gov/current/title-16/chapter-I/subchapter-C/part-310/section-310.2",
            "ebr_transaction counts on the days before granted_at + 18 months and ebr_inquiry before granted_at + "
            "3 months (days of the pack's time zone; of an instant, until the same instant 18 or 3 months later): "
            "the day itself is left out, the safe side of 'within ... immediately preceding'. The FCC's "
            "definition (47 CFR 64.1200(f)(5)) has the same windows and adds 'which relationship has not been "
            "previously terminated by either party' (ends_at). Quoted as reproduced by compliance guides.",
            verified=False,
        ),
        Source(
            "TSR_ENTITY_DNC",
            "16 CFR 310.4(b)(1)(iii)(A)",
            _TSR,
            "16 CFR 310.4(b)(1)(iii)(A)",
            _TSR_PUB,
            "(not read) Initiating any outbound telephone call to a person when that person previously has stated "
            "that he or she does not wish to receive an outbound telephone call made by or on behalf of the seller "
            "whose goods or services are being offered.",
            "https://www.ecfr.gov/current/title-16/chapter-I/subchapter-C/part-310/section-310.4",
            "The internal do-not-call list (opt-outs of this client or of every client), honoured from the next "
            "intent; an established business relationship never lifts it.",
            verified=False,
        ),
        Source(
            "TCPA_ENTITY_DNC",
            "47 CFR 64.1200(d)(3)",
            _TCPA,
            "47 CFR 64.1200(d)(3) and (a)(10)",
            _TCPA_PUB,
            "[...] the request is recorded and placed on the caller's do-not-call list [...] All requests to "
            "revoke prior express consent or prior express written consent made in any reasonable manner must be "
            "honored within a reasonable time not to exceed ten business days from receipt of such request.",
            "https://www.ecfr.gov/current/title-47/chapter-I/subchapter-B/part-64/subpart-L/section-64.1200",
            "The law allows up to ten business days; callguard applies an opt-out to the next intent (within about "
            "a second of the message on callguard.optouts). Quoted from a document citing the current eCFR.",
            verified=False,
        ),
        Source(
            "TSR_CALLING_HOURS",
            "16 CFR 310.4(c)",
            _TSR,
            "16 CFR 310.4(c)",
            _TSR_PUB,
            "(not read) Without the prior consent of a person, it is an abusive telemarketing act or practice "
            "[...] for a telemarketer to engage in outbound telephone calls to a person's residence at any time "
            "other than between 8:00 a.m. and 9:00 p.m. local time at the called person's location.",
            "https://www.ecfr.gov/current/title-16/chapter-I/subchapter-C/part-310/section-310.4",
            "08:00 included, 21:00 excluded, at the callee's location: in every time zone its area code spans.",
            verified=False,
        ),
        Source(
            "TCPA_CALLING_HOURS",
            "47 CFR 64.1200(c)(1)",
            _TCPA,
            "47 CFR 64.1200(c)(1)",
            _TCPA_PUB,
            "No person or entity shall initiate any telephone solicitation to: (1) Any residential telephone "
            "subscriber before the hour of 8 a.m. or after 9 p.m. (local time at the called party's location)",
            "https://www.ecfr.gov/current/title-47/chapter-I/subchapter-B/part-64/subpart-L/section-64.1200",
            "As TSR_CALLING_HOURS. Quoted from documents citing the current eCFR and Cornell's reproduction.",
            verified=False,
        ),
        Source(
            "US_TIME_ZONES",
            "49 CFR part 71",
            "Standard time zone boundaries in the United States",
            "49 CFR part 71",
            "Code of Federal Regulations, title 49",
            "(not read) The boundaries of the standard time zones follow county and state lines; several area "
            "codes of Florida, Indiana, Kentucky, Tennessee, Michigan, Kansas, Nebraska, Texas, Oregon and Arizona "
            "(the Navajo Nation keeps daylight time) lie on both sides of one.",
            "https://www.ecfr.gov/current/title-49/subtitle-A/part-71",
            "libphonenumber lists one zone for several such area codes (850 only America/New_York, 423 only "
            "America/Chicago, 541 only America/Los_Angeles): the pack adds the other zones (policy data, "
            "calling_hours.zones) and the window must hold in all of them.",
            verified=False,
        ),
        Source(
            "FL_TSA",
            "Fla. Stat. 501.616(6)",
            "Florida Telemarketing Act",
            "Fla. Stat. 501.616(6)",
            "Florida Statutes, leg.state.fl.us",
            "A commercial telephone solicitation phone call before 8 a.m. or after 8 p.m. local time in the "
            "called person's time zone [...] More than three commercial telephone solicitation phone calls from "
            "any number to a person over a 24-hour period on the same subject matter or issue, regardless of the "
            "phone number used to make the call.",
            "http://www.leg.state.fl.us/statutes/index.cfm?App_mode=Display_Statute&URL=0500-0599/0501/Sections/0501.616.html",
            "Florida area codes: 08:00-20:00, and at most 3 calls per rolling 24 hours per callee and client (a "
            "client's calls count as one subject: the safe side). Quoted as reproduced by a document that read "
            "the statute in October 2026.",
            verified=False,
        ),
        Source(
            "OK_TSA",
            "15 O.S. 775C.4",
            "Oklahoma Telephone Solicitation Act of 2022",
            "15 O.S. 775C.4",
            "Oklahoma Statutes",
            "(not read) No telephonic sales call before 8:00 a.m. or after 8:00 p.m. local time at the called "
            "party's location, and not more than three calls within a 24-hour period on the same subject matter.",
            "https://www.oscn.net/ (15 O.S. 775C.4)",
            "Oklahoma area codes: 08:00-20:00 and 3 calls per rolling 24 hours, as the issue and compliance "
            "guides summarise it (some guides say 21:00: the stricter 20:00 is kept).",
            verified=False,
        ),
        Source(
            "MD_SSCA",
            "Md. Code, Com. Law 14-4503",
            "Maryland Stop the Spam Calls Act of 2023",
            "Md. Code, Com. Law 14-4503",
            "Annotated Code of Maryland; in force 1 January 2024",
            "(not read) No telephone solicitation before 8 a.m. or after 8 p.m. at the called party's location, "
            "and not more than three calls within a 24-hour period on the same subject matter.",
            "https://mgaleg.maryland.gov/ (Commercial Law 14-4503)",
            "Maryland area codes: 08:00-20:00 and 3 calls per rolling 24 hours.",
            verified=False,
        ),
        Source(
            "FL_DNC",
            "Fla. Stat. 501.059(4)",
            "Florida Telephone Solicitation Act",
            "Fla. Stat. 501.059(4)",
            "Florida Statutes, leg.state.fl.us",
            "(not read) A telephone solicitor may not make an unsolicited telephonic sales call to a person whose "
            "telephone number is on the then-current quarterly listing of the Florida 'no sales solicitation "
            "calls' list.",
            "http://www.leg.state.fl.us/statutes/ (501.059)",
            "A state list is a register of its own (us-fl-dnc) for the callees of Florida's area codes; the list "
            "is quarterly, but the pack holds it to the federal 31 days (stale_after_days = 31), the safe side.",
            verified=False,
        ),
        Source(
            "TCPA_WIRELESS_AUTODIALED",
            "47 CFR 64.1200(a)(2)",
            _TCPA,
            "47 CFR 64.1200(a)(2)",
            _TCPA_PUB,
            "Initiate, or cause to be initiated, any telephone call that includes or introduces an advertisement "
            "or constitutes telemarketing, using an automatic telephone dialing system or an artificial or "
            "prerecorded voice, to any of the lines or telephone numbers described in paragraphs (a)(1)(i) "
            "through (iii) of this section, other than a call made with the prior express written consent of the "
            "called party [...]",
            "https://www.ecfr.gov/current/title-47/chapter-I/subchapter-B/part-64/subpart-L/section-64.1200",
            "(a)(1)(iii) is 'any telephone number assigned to a [...] cellular telephone service'. An automated "
            "intent to a number that is or may be wireless (every US number: libphonenumber says "
            "fixed_line_or_mobile) needs this client's consent (a written agreement) in force. Quoted from a "
            "document citing the current eCFR.",
            verified=False,
        ),
        Source(
            "TCPA_REASSIGNED",
            "47 CFR 64.1200(m)",
            _TCPA,
            "47 CFR 64.1200(m)",
            _TCPA_PUB,
            "(not read; the FCC's order FCC 18-177 as summarised) A caller that verified in the reassigned numbers "
            "database that the number has not been permanently disconnected since the date prior express consent "
            "was obtained is not liable when the database erred. The database answers 'yes' when the date in the "
            "query is the same as or before the number's permanent disconnection date.",
            "https://www.ecfr.gov/current/title-47/chapter-I/subchapter-B/part-64/subpart-L/section-64.1200",
            "A consent, relationship or request of day D does not count when the number was permanently "
            "disconnected on day D or later (callguard reassigned load): number_reassigned where it would have "
            "lifted a rule.",
            verified=False,
        ),
        Source(
            "TSR_ABANDONMENT",
            "16 CFR 310.4(b)(4)(i)",
            _TSR,
            "16 CFR 310.4(b)(4)(i)",
            _TSR_PUB,
            "(not read) [...] employs technology that ensures abandonment of no more than three (3) percent of "
            "all calls answered by a person, measured over the duration of a single calling campaign, if less "
            "than 30 days, or separately over each successive 30-day period or portion thereof that the campaign "
            "continues.",
            "https://www.ecfr.gov/current/title-16/chapter-I/subchapter-C/part-310/section-310.4",
            "The shared campaign rate with US parameters (0.03, 30 days): abandoned and silent outcomes over "
            "answered ones, a smaller denominator than 'all calls answered by a person' (which counts the "
            "abandoned ones too), so the stricter rate; a rolling window rather than successive periods.",
            verified=False,
        ),
        Source(
            "TSR_CALLER_ID",
            "16 CFR 310.4(a)(8)",
            _TSR,
            "16 CFR 310.4(a)(8)",
            _TSR_PUB,
            "(not read) Failing to transmit or cause to be transmitted the telephone number, and, when made "
            "available by the telemarketer's carrier, the name of the telemarketer, to any caller identification "
            "service in use by a recipient of a telemarketing call [...]",
            "https://www.ecfr.gov/current/title-16/chapter-I/subchapter-C/part-310/section-310.4",
            "The shared caller-ID rule with US parameters: a callable caller ID the operator declared; no "
            "prefix and no Italian carrier block.",
            verified=False,
        ),
    )
}


def cite(key: str) -> Source:
    """The source a rule cites; a KeyError names a citation nobody wrote down."""
    return SOURCES[key]
