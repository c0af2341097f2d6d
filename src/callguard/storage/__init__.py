"""Redis: the keys, the connection, the looked-up facts and the registers,
for one Redis and for a cluster."""
