"""The web page of ``imtranslate serve`` (FastAPI app in :mod:`imtranslate.web.app`; the page and its
script in ``static/``). Needs the ``web`` extra: ``pip install 'imtranslate[web]'``."""
