"""The evidence export package's building blocks: the written note (PDF) and the ISO 9660 disc image."""
