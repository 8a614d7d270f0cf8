"""The browser viewer's server side: the page that starts it and the annotations it saves.

Images reach the viewer only through DICOMweb; this package serves the page with
what the JavaScript needs to start, and a small JSON API for each user's annotations.
"""
