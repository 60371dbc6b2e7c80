"""Data-parallel steps: launching worker processes (spawn or torchrun) that die with their parent,
timing the step and its gradient all-reduce, and the record the store keeps (readable without
torch)."""
