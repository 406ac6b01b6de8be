"""`genrec explore`: a local web page that shows why a run recommends what it does.

`data.RunIndex` reads a run folder (the one `genrec run` / `genrec demo` writes) into JSON-ready parts;
`server` serves them with Bottle (and the "try it" form behind `genrec recommend`'s code); `static` writes the
same page as a folder of files for sharing. See docs/explore.md.
"""
