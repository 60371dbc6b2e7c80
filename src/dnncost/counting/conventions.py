"""The counting convention, stated once, in words, and printed with every table of counts.

Users of fvcore, ptflops and thop get different numbers for the same model and rarely know why;
this text says exactly what each dnncost figure includes.
"""

CONVENTION = (
    "Counting convention (dnncost): "
    "1 MAC = one multiply-accumulate; MACs count convolution (any groups/stride/dilation, transposed), "
    "linear/matmul/bmm/einsum and attention (QK^T and AV) only -- the figure papers and torchvision's "
    "model docs quote as 'GFLOPS'. Bias additions are not MACs. "
    "FLOPs = 2 x MACs + every other arithmetic operation: bias adds, batch/layer/group norm, "
    "activations, pooling, elementwise arithmetic, softmax, reductions, loss and optimizer update, "
    "each at its documented per-element rule (dnncost.counting.formulas). "
    "Bytes = bytes read (every input tensor, weights included) + bytes written (every output) per "
    "operator call, i.e. memory traffic with no cache reuse between calls; views move nothing. "
    "A training step = forward + loss + backward through the real autograd graph + optimizer step; "
    "activation memory = tensors autograd saves for backward (parameters excluded). "
    "Fused kernels (TransformerEncoderLayer's fast path, oneDNN/cuDNN RNNs) count the same arithmetic "
    "as their decomposed form; nested tensors count at their padded size. "
    "Operators without a formula are listed as unsupported, never counted as zero, and the totals "
    "are then lower bounds (marked '>=', incomplete: true)."
)

CONVENTION_SHORT = (
    "MACs: multiply-accumulates of conv/linear/matmul/attention (the papers' 'GFLOPS'); "
    "FLOPs = 2 x MACs + all other arithmetic; bytes = read + written per operator."
)
"""The convention in one line, for the foot of a table (the full text: :data:`CONVENTION`)."""
