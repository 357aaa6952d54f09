"""What `publisher init` writes into a new newsletter's folder (package data): a sample issue
with an image, and the .gitignore. Placeholders are `$name`-style (string.Template)."""
