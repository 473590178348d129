"""The only package that talks SQL. Everything else receives and returns models.

One module per kind of record; every public function is re-exported here, so callers
write ``store.add_subscriber(db, ...)``.
"""

from newsletter.store.briefs import *  # noqa: F403
from newsletter.store.db import *  # noqa: F403
from newsletter.store.deliveries import *  # noqa: F403
from newsletter.store.dump import *  # noqa: F403
from newsletter.store.events import *  # noqa: F403
from newsletter.store.merge import *  # noqa: F403
from newsletter.store.papers import *  # noqa: F403
from newsletter.store.prune import *  # noqa: F403
from newsletter.store.relevance import *  # noqa: F403
from newsletter.store.source_records import *  # noqa: F403
from newsletter.store.subscribers import *  # noqa: F403
from newsletter.store.tombstones import *  # noqa: F403
from newsletter.store.web import *  # noqa: F403
