"""What every message the tool sends carries, whichever stage sends it: its headers, written
in one place (``headers``), and its optional DKIM signature (``signing``)."""
