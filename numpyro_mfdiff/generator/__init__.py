"""The generators ``G_low(y, z)`` and ``G_high(z)``: their networks, the regression fit
on labelled triples, batched draws and the checks against their labels (``_network``)."""
