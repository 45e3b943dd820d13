#!/usr/bin/env Rscript
# Fit a mixture of k linear regressions over tasks with flexmix, for
# benchmarks/flexmix_compare.py.
#
# usage: Rscript flexmix_fit.R POOL.csv K NREP SEED OUT.csv [intercept]
#   POOL.csv  columns task, y, x1..xd (no row names)
#   OUT.csv   one row per component: prior, sigma, w1..wd; the first line of the
#             file's companion OUT.csv.time holds the elapsed seconds of the fit
# The model is `y ~ 0 + x | task` (the pools have no intercept), or `y ~ x | task`
# when the sixth argument is "intercept"; stepFlexmix keeps the best of NREP runs
# from random starts (EM over tasks: all rows of a task share one component).
suppressPackageStartupMessages(library(flexmix))
args <- commandArgs(trailingOnly = TRUE)
pool <- read.csv(args[1])
k <- as.integer(args[2])
nrep <- as.integer(args[3])
set.seed(as.integer(args[4]))
out <- args[5]
intercept <- length(args) >= 6 && args[6] == "intercept"
xcols <- grep("^x", names(pool))
dat <- data.frame(y = pool$y, task = pool$task)
dat$x <- as.matrix(pool[, xcols])
form <- if (intercept) y ~ x | task else y ~ 0 + x | task
elapsed <- system.time(
  m <- stepFlexmix(form, data = dat, k = k, nrep = nrep, verbose = FALSE)
)[["elapsed"]]
par <- parameters(m)
rows <- grep("^coef\\.x", rownames(par))
res <- data.frame(prior = prior(m), sigma = par["sigma", ], t(par[rows, , drop = FALSE]))
write.csv(res, out, row.names = FALSE)
writeLines(format(elapsed, digits = 6), paste0(out, ".time"))
