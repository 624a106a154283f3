"""Problem builders: curvature + quantiser -> AllocationProblem."""
