#!/bin/sh
# Formats the file a tool just wrote.
dotnet format --include "$CLAUDE_FILE_PATH" >/dev/null 2>&1 || true
