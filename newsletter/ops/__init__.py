"""Operations around the morning job: who is due (``schedule``), the run lock (``lock``),
the state carried between scheduled runs (``statesync``) and the offline demo (``demo``).
"""
