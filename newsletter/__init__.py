"""AcademicHub newsletter: a morning email of the new papers that matter to each researcher."""

__version__ = "0.1.0"
