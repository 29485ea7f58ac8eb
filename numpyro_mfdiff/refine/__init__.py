"""Refinement of the posterior with more simulations: adaptive importance sampling
(``_sequential``), tempered SMC on BlackJAX (``_smc``, its start in ``_smc_start``), the
pooled rounds of a batch (``_pooled``), Gaussian KDE proposals and kernel bandwidths
(``_kde``), the shared weight maths (``_weights``: ESS, log-sum-exp, weighted moments),
the records and checks of a refinement (``_refinement``) and the glue that runs the
stages and fits ``G_high`` (``_refine``). A new proposal goes in ``_kde`` (or beside it),
a new engine beside ``_sequential`` and ``_smc``."""
