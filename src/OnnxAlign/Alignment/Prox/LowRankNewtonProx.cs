using OnnxAlign.Core;
using OnnxAlign.Rewards;

namespace OnnxAlign.Alignment.Prox;

/// <summary>
/// Smooth concave f, k ≤ 3: the exact k-dim reduction (DESIGN §3)
/// z* = argmax_z φ(z) = f(z) − (λ/2)(z − z₀)ᵀG⁻¹(z − z₀), then T(x) = x + W⁻¹AᵀG⁻¹(z* − z₀),
/// solved by Newton with backtracking. φ is λ-strongly concave in the G⁻¹ metric, so
/// φ* − φ(z) ≤ ∇φᵀG∇φ/(2λ): the certified gap. When T(x) leaves the value box the boxed problem is solved directly
/// (<see cref="ConcaveAscentProx.ProjectedAscent"/>).
/// </summary>
internal sealed class LowRankNewtonProx(FeatureReward reward, ProxSettings settings) : ProxSolver(settings)
{
    private readonly FeatureGeometry _geometry = new(reward, settings.Cost);

    public override string Name => "low-rank-newton";

    public override ProxSolution Solve(ReadOnlySpan<float> x)
    {
        var g = _geometry;
        int k = g.K;
        Span<double> z0 = stackalloc double[k], z = stackalloc double[k], u = stackalloc double[k], grad = stackalloc double[k],
                     step = stackalloc double[k], trial = stackalloc double[k], gradF = stackalloc double[k];
        Span<double> hessian = stackalloc double[k * k];
        reward.Project(x, z0);
        z0.CopyTo(z);
        double Phi(ReadOnlySpan<double> zz, ReadOnlySpan<double> origin)
        {
            Span<double> d = stackalloc double[zz.Length];
            for (int j = 0; j < d.Length; j++) d[j] = zz[j] - origin[j];
            return reward.Function.Value(zz) - 0.5 * Lambda * g.Quadratic(g.GInverse, d);
        }

        double phi = Phi(z, z0), gap = double.PositiveInfinity;
        int iteration = 0;
        for (; iteration < Settings.MaxIterations; iteration++)
        {
            reward.Function.Gradient(z, gradF);
            for (int j = 0; j < k; j++) trial[j] = z[j] - z0[j];
            g.Multiply(g.GInverse, trial, u);
            for (int j = 0; j < k; j++) grad[j] = gradF[j] - Lambda * u[j];
            gap = g.Quadratic(g.G, grad) / (2 * Lambda);
            if (gap <= AllowedGap(phi)) break;

            // Newton: (λG⁻¹ − ∇²f)Δ = ∇φ, a positive definite system since f is concave.
            reward.Function.Hessian(z, hessian);
            for (int m = 0; m < k * k; m++) hessian[m] = Lambda * g.GInverse[m] - hessian[m];
            grad.CopyTo(step);
            if (!Numerics.SolveSymmetricPositive(hessian, step)) g.Multiply(g.G, grad, step); // fall back to the metric gradient
            double slope = 0;
            for (int j = 0; j < k; j++) slope += grad[j] * step[j];
            double t = 1, next = phi;
            for (int halving = 0; halving < 60; halving++, t /= 2)
            {
                for (int j = 0; j < k; j++) trial[j] = z[j] + t * step[j];
                next = Phi(trial, z0);
                if (next >= phi + 1e-4 * t * slope) break;
            }
            if (!(next >= phi)) break; // no ascent left at double precision; the gap reports where we are
            trial.CopyTo(z);
            phi = next;
        }

        for (int j = 0; j < k; j++) trial[j] = z[j] - z0[j];
        g.Multiply(g.GInverse, trial, u);
        var y = new double[x.Length];
        g.Lift(x, u, null, y);
        if (!LeavesBox(y)) return new ProxSolution(y, gap, false, Name, iteration);
        var boxed = ConcaveAscentProx.ProjectedAscent(reward, Settings, x, y);
        return boxed with { Iterations = boxed.Iterations + iteration };
    }
}
