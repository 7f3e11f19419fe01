"""Text handling shared by the kinds: sentence splitting, safe truncation, language detection, cleaning."""
