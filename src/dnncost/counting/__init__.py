"""Computation: what a step costs, counted per aten operator without doing its arithmetic.

:mod:`.counter` interprets the model (a TorchDispatchMode, on the meta device by default),
:mod:`.formulas` is the one operator registry (cost formula and kernel kind of each aten op),
:mod:`.cost` holds the records (Cost, OpRecord, CostReport), :mod:`.table` renders the module tree,
:mod:`.conventions` states what is counted.
"""
