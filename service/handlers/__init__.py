"""FastStream subscribers: message in -> use case -> reply out. Thin."""
