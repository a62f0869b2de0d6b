"""The report's building blocks: figures, markdown tables and the self-contained page. The
stage `report` (gammaface.stages.report) assembles them; the downstream comparison and the
sweep draw with them too."""
