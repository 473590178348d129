#!/usr/bin/env bash
# Regenerate docs/screenshot.png: the demo issue for ada@example.org at 640 px, top 1500 px,
# rendered by Debian's chromium through playwright-core (nothing is downloaded).
set -euo pipefail
cd "$(dirname "$0")/.."
NEWSLETTER_NOW=2026-11-22T09:00:00+00:00 .venv/bin/newsletter demo --outbox .demo/outbox \
  --db .demo/newsletter.db >/dev/null
node tests/browser/inspect.mjs "$PWD/.demo/outbox/2026-11-22_ada@example.org.html" 640 \
  docs/screenshot.png light 1500 >/dev/null
echo "wrote docs/screenshot.png"
