"""The web page (templates, script, styles) and the HTTP guards shared with the REST API."""
