"""The stability benchmark with the blend at 0.65 everywhere (session 40's coarse face), for an A/B."""
import runpy
import sys

from facenormals import prior

prior.BLEND_ICT_WEIGHT = prior.BLEND_PROFILE_ICT_WEIGHT = 0.65
sys.argv = ["stability", *sys.argv[1:]]
runpy.run_module("facenormals.benchmarks.stability", run_name="__main__")
