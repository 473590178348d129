"""What keeps the outside world in check, for every stage: text and links from outside made
safe to show (``untrusted``: control and bidi characters stripped, http(s) links only) and
a total deadline on one network exchange (``deadline``: a server that drips its answer is
cut off)."""
