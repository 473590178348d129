"""Domain errors. Stage modules raise these; cli.py turns them into one-line messages."""


class NewsletterError(Exception):
    """An error a person can act on; its message says what to do."""


class InvalidAddress(NewsletterError):
    pass


class SubscriberExists(NewsletterError):
    pass


class SubscriberNotFound(NewsletterError):
    pass


class InvalidFilter(NewsletterError):
    pass



class SendFailed(NewsletterError):
    """A message did not go out; ``temporary`` failures are retried on the next run."""

    def __init__(self, message: str, temporary: bool = False):
        super().__init__(message)
        self.temporary = temporary


class ConfigError(NewsletterError):
    pass


class PaperNotFound(NewsletterError):
    pass
