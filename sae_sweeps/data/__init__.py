"""Text, token contexts and activation streams."""
