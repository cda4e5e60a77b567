"""Tools the model may call: built-ins, library command tools, MCP tools, permissions, call formats and the tool loop."""
