"""The study: count, time and train many networks, keep every result in SQLite, analyse.

:mod:`.sweep` runs it (resumable), :mod:`.store` keeps it, :mod:`.analysis` and :mod:`.work` turn
it into findings (time vs computation across networks; time vs work within one; time to a target
accuracy, :mod:`.time_to_accuracy`); :mod:`.stages` and :mod:`.progress` time its run and show it.
"""
