"""Scripts that regenerate the reference captures of captures/ with the project's own tools."""
