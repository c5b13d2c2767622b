"""idnode read path: Handle protocol codec, resolver core, front doors and CLI."""
