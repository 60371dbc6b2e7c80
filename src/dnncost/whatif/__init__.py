"""What-if: apply a compression or execution technique to a network, count it and time it side by
side with the unmodified network. One file per transformation, registered in :mod:`.registry`;
:mod:`.runner` counts and times them."""
