using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.Optimization;
using OnnxAlign.Core;
using OnnxAlign.Rewards;

namespace OnnxAlign.Alignment.Prox;

/// <summary>
/// Smooth concave r in full dimension (DESIGN §3): Φ(y) = r(y) − λ·c(x, y) is strongly concave with modulus λwᵢ per
/// coordinate, so for any y (and any y' in the box)
/// Φ(y') ≤ Φ(y) + ∇Φ(y)·(y' − y) − (λ/2)Σwᵢ(y'ᵢ − yᵢ)², and maximising the right side over the box (it separates by
/// coordinate) bounds Φ* − Φ(y): the certified stopping rule. Unboxed problems are solved by L-BFGS (MathNet.Numerics);
/// the boxed problem directly by spectral projected gradient (Birgin, Martínez and Raydan 2000) with a non-monotone
/// line search.
/// </summary>
internal sealed class ConcaveAscentProx(Reward reward, ProxSettings settings) : ProxSolver(settings)
{
    public override string Name => "lbfgs";

    public override ProxSolution Solve(ReadOnlySpan<float> x)
    {
        var origin = x.ToArray();
        int d = origin.Length;
        var start = Array.ConvertAll(origin, v => (double)v);
        int iterations = 0;
        var objective = ObjectiveFunction.Gradient((Func<Vector<double>, (double, Vector<double>)>)(v =>
        {
            var y = v.AsArray() ?? v.ToArray();
            var gradient = new double[d];
            double value = Ascent(reward, Settings, origin, y, gradient);
            for (int i = 0; i < d; i++) gradient[i] = -gradient[i];
            iterations++;
            return (-value, Vector<double>.Build.Dense(gradient));
        }));
        double[] solution = start;
        try
        {
            var minimizer = new LimitedMemoryBfgsMinimizer(1e-12, 1e-15, 1e-15, 10, Settings.MaxIterations);
            solution = minimizer.FindMinimum(objective, Vector<double>.Build.Dense(start)).MinimizingPoint.ToArray();
        }
        catch (Exception e) when (e is OptimizationException or MaximumIterationsException or ArgumentException)
        {
            // MathNet gives up when its line search stalls near the optimum; the certificate below decides what that is worth.
        }
        var g = new double[d];
        double phi = Ascent(reward, Settings, origin, solution, g);
        double gap = Gap(Settings, solution, g, null);
        if (gap > AllowedGap(phi) || LeavesBox(solution))
        {
            // Not certified yet, or outside the box: continue with the projected method, which stops on the certificate.
            var continued = ProjectedAscent(reward, Settings, x, solution);
            return continued with { Iterations = continued.Iterations + iterations };
        }
        return new ProxSolution(solution, gap, false, Name, iterations);
    }

    /// <summary>Φ(y) and ∇Φ(y) = ∇r(y) − λW(y − x).</summary>
    internal static double Ascent(Reward reward, ProxSettings settings, ReadOnlySpan<float> x, ReadOnlySpan<double> y, Span<double> gradient)
    {
        double r = reward.Gradient(y, gradient), cost = 0;
        for (int i = 0; i < y.Length; i++)
        {
            double w = settings.Cost.Weight(i), delta = y[i] - x[i];
            cost += w * delta * delta;
            gradient[i] -= settings.Lambda * w * delta;
        }
        return r - 0.5 * settings.Lambda * cost;
    }

    /// <summary>The strong-concavity certificate max_{y'∈box} ∇Φ·(y' − y) − (λ/2)Σwᵢ(y'ᵢ − yᵢ)² ≥ Φ* − Φ(y).</summary>
    internal static double Gap(ProxSettings settings, ReadOnlySpan<double> y, ReadOnlySpan<double> gradient, ValueBox? box)
    {
        double gap = 0;
        for (int i = 0; i < y.Length; i++)
        {
            double curvature = settings.Lambda * settings.Cost.Weight(i), t = gradient[i] / curvature;
            if (box is { } b) t = Math.Clamp(t, b.Lower - y[i], b.Upper - y[i]);
            gap += gradient[i] * t - 0.5 * curvature * t * t;
        }
        return Math.Max(gap, 0);
    }

    /// <summary>Spectral projected gradient ascent on Φ over the settings' box (unconstrained without one), from
    /// <paramref name="start"/> projected, until the certified gap is within tolerance.</summary>
    internal static ProxSolution ProjectedAscent(Reward reward, ProxSettings settings, ReadOnlySpan<float> x, ReadOnlySpan<double> start)
    {
        var box = settings.Box;
        int d = start.Length;
        double maxCurvature = settings.Lambda * Enumerable.Range(0, d).Max(settings.Cost.Weight);
        var y = new double[d];
        var g = new double[d];
        var trial = new double[d];
        var trialGradient = new double[d];
        var direction = new double[d];
        for (int i = 0; i < d; i++) y[i] = box is { } b0 ? b0.Clamp(start[i]) : start[i];
        double phi = Ascent(reward, settings, x, y, g);
        double step = 1 / maxCurvature, gap = double.PositiveInfinity;
        const int memory = 10;
        var recent = new Queue<double>([phi]);
        int iteration = 0;
        for (; iteration < settings.MaxIterations; iteration++)
        {
            gap = Gap(settings, y, g, box);
            if (gap <= settings.Tolerance * Math.Max(1, Math.Abs(phi))) break;
            double slope = 0;
            for (int i = 0; i < d; i++)
            {
                double moved = y[i] + step * g[i];
                direction[i] = (box is { } b ? b.Clamp(moved) : moved) - y[i];
                slope += g[i] * direction[i];
            }
            if (!(slope > 0)) break;
            double reference = recent.Max(), t = 1, next = phi;
            bool accepted = false;
            for (int halving = 0; halving < 60; halving++, t /= 2)
            {
                for (int i = 0; i < d; i++) trial[i] = y[i] + t * direction[i];
                next = Ascent(reward, settings, x, trial, trialGradient);
                if (next >= reference + 1e-4 * t * slope) { accepted = true; break; }
            }
            if (!accepted) break; // no ascent left at double precision; the gap reports where we are
            // Barzilai–Borwein step from s = Δy, q = −Δ∇Φ (sᵀq > 0 by strong concavity).
            double ss = 0, sq = 0;
            for (int i = 0; i < d; i++)
            {
                double s = trial[i] - y[i], q = g[i] - trialGradient[i];
                ss += s * s;
                sq += s * q;
            }
            step = sq > 0 ? Math.Clamp(ss / sq, 1e-12 / maxCurvature, 1e12 / maxCurvature) : 1 / maxCurvature;
            (y, trial) = (trial, y);
            (g, trialGradient) = (trialGradient, g);
            phi = next;
            recent.Enqueue(phi);
            if (recent.Count > memory) recent.Dequeue();
        }
        bool active = box is { } bb && y.Any(v => v == bb.Lower || v == bb.Upper);
        return new ProxSolution(y, gap, active, box is null ? "projected-gradient" : "projected-gradient-boxed", iteration);
    }
}
