"""Reporting: tables (:mod:`.formatting`), figures (:mod:`.plots`, :mod:`.whatif`) and the
study's Markdown/HTML/CSV/JSON report (:mod:`.report`). With commands/, the only code that prints."""
