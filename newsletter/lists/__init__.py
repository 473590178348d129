"""List management: who is on the list and how they join, change and leave.

``roster`` (add, edit, pause, confirm, forget, import/export decisions), ``listio`` (CSV and
JSON files), ``addresses`` (normalising addresses), ``tokens`` (signed links) and
``mailbox`` (unsubscribes, confirmations and bounces read over IMAP).
"""
