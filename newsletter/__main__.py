from newsletter.cli import cli

cli()
