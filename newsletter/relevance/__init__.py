"""Relevance that learns from the reader: "papers like mine" (seed papers) and feedback.

``learned`` trains a small linear model per subscriber over TF-IDF features of title and
abstract (as arxiv-sanity-lite does) and scores the day's papers with it; ``seeds`` reads
the papers a reader names (arXiv ids, DOIs, BibTeX, RIS or CSL-JSON files).
scikit-learn is imported inside the functions that need it, so ``newsletter --help`` does
not pay for it.
"""
