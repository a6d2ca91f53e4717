using OnnxAlign.Core;
using OnnxAlign.Rewards;

namespace OnnxAlign.Alignment.Prox;

/// <summary>
/// Lipschitz (non-concave) f, k ≤ 3 (DESIGN §3): maximise V(z) = f(z) − λ·g(z) over the features z = Ay + c, where
/// g(z) = min { c(x, y) : Ay + c = z, y in the box } is the cheapest transport to features z, by branch-and-bound to a
/// certified gap.
/// <para>Bounds. g is convex and, by weak duality, g(z) ≥ h(ν; z) = ν·(z − c) + minᵧ Σᵢ[½wᵢ(yᵢ − xᵢ)² − (Aᵀν)ᵢyᵢ] for
/// every ν — affine in z. On a cell with centre m and half-widths η this gives
/// V(z) ≤ f(m) − λh(ν; m) + L‖η‖₂ + λΣ|νⱼ|ηⱼ (f L-Lipschitz), and, where f is M-smooth,
/// V(z) ≤ f(m) − λh(ν; m) + Σ|∂ⱼf(m) − λνⱼ|ηⱼ + (M/2)‖η‖². Lower bounds are the objective of the feasible point
/// y(ν) = clamp(x + W⁻¹Aᵀν). Without a box, h and y(ν) are exact at ν = G⁻¹(m − z₀) (the k-dim reduction); with a box,
/// ν comes from Newton on the concave dual.</para>
/// <para>Search region. With ỹ = clamp(x) feasible, V(z*) ≥ f(Aỹ + c) − λc(x, ỹ), while
/// V(z*) ≤ f(z̃) + L‖z* − z̃‖ − λ‖z* − z₀‖²/(2λ_max(G)); solving for ‖z* − z₀‖ gives the a-priori radius R
/// (2Lλ_max(G)/λ without a box). Cost ~ (L·R/ε)ᵏ cells in the worst case.</para>
/// </summary>
internal sealed class BranchAndBoundProx(FeatureReward reward, ProxSettings settings) : ProxSolver(settings)
{
    private readonly FeatureGeometry _geometry = new(reward, settings.Cost);

    public override string Name => "lipschitz-branch-and-bound";

    public override ProxSolution Solve(ReadOnlySpan<float> x)
    {
        var free = Search(x, null);
        if (!LeavesBox(free.Y)) return free;
        var boxed = Search(x, Settings.Box);
        return boxed with { BoxActive = true, Iterations = free.Iterations + boxed.Iterations, Method = Name + "-boxed" };
    }

    private sealed record Cell(double[] Centre, double[] Half, double[] Nu, double Upper);

    private ProxSolution Search(ReadOnlySpan<float> x, ValueBox? box)
    {
        var f = reward.Function;
        int k = _geometry.K;
        double lipschitz = f.LipschitzConstant, smoothness = f.SmoothnessConstant;
        var dual = new TransportDual(_geometry, Settings, x, box);
        var z0 = dual.Origin;

        // A-priori radius around z₀ (class summary).
        double shift = 0, startCost = 0;
        if (box is { } b)
        {
            var clamped = new double[x.Length];
            for (int i = 0; i < x.Length; i++) clamped[i] = b.Clamp(x[i]);
            Span<double> zc = stackalloc double[k];
            reward.Project(clamped, zc);
            for (int j = 0; j < k; j++) shift += (zc[j] - z0[j]) * (zc[j] - z0[j]);
            shift = Math.Sqrt(shift);
            startCost = Settings.Cost.Evaluate(x, clamped);
        }
        double a = Lambda / (2 * _geometry.LargestEigenvalue);
        double radius = (lipschitz + Math.Sqrt(lipschitz * lipschitz + 4 * a * (lipschitz * shift + Lambda * startCost))) / (2 * a);
        radius = radius * (1 + 1e-9) + 1e-12;
        var low = new double[k];
        var high = new double[k];
        for (int j = 0; j < k; j++) (low[j], high[j]) = (z0[j] - radius, z0[j] + radius);
        if (box is { } bb)
            for (int j = 0; j < k; j++)
            {
                // z must lie in A(box) + c: within its bounding box.
                var row = reward.Feature(j);
                double lo = reward.Offsets[j], hi = reward.Offsets[j];
                foreach (double v in row) { lo += Math.Min(v * bb.Lower, v * bb.Upper); hi += Math.Max(v * bb.Lower, v * bb.Upper); }
                (low[j], high[j]) = (Math.Max(low[j], lo), Math.Min(high[j], hi));
            }

        double best = double.NegativeInfinity, prunedUpper = double.NegativeInfinity;
        var bestNu = new double[k];
        var gradient = new double[k];
        int evaluated = 0;

        Cell Evaluate(double[] centre, double[] half, double[] warmNu)
        {
            evaluated++;
            var nu = (double[])warmNu.Clone();
            double h = dual.Solve(centre, nu);
            double fc = f.Gradient(centre, gradient), halfSquared = 0;
            foreach (double e in half) halfSquared += e * e;
            double halfNorm = Math.Sqrt(halfSquared);

            // Lower bounds of g over the cell: the dual's affine minorant, and (with a box) the unboxed cost q ≤ g and 0 ≤ g,
            // which stay useful where the centre lies outside the reachable set and ν is huge.
            double dualLower = dual.CellLowerBound(centre, half, nu), unboxedLower = double.NegativeInfinity;
            if (box is not null)
            {
                Span<double> offset = stackalloc double[k], slope = stackalloc double[k];
                for (int j = 0; j < k; j++) offset[j] = centre[j] - z0[j];
                _geometry.Multiply(_geometry.GInverse, offset, slope);
                unboxedLower = 0.5 * _geometry.Quadratic(_geometry.GInverse, offset);
                for (int j = 0; j < k; j++) unboxedLower -= Math.Abs(slope[j]) * half[j];
                unboxedLower = Math.Max(unboxedLower, 0);
            }
            double transportLower = Math.Max(dualLower, unboxedLower);
            double upper = fc + lipschitz * halfNorm - Lambda * transportLower;
            if (double.IsFinite(smoothness))
            {
                // f(z) ≤ f(m) + ∇f(m)·(z − m) + (M/2)‖z − m‖², paired with the dual minorant (tight near smooth optima)…
                double paired = fc - Lambda * h + 0.5 * smoothness * halfSquared, alone = fc + 0.5 * smoothness * halfSquared - Lambda * unboxedLower;
                for (int j = 0; j < k; j++)
                {
                    paired += Math.Abs(gradient[j] - Lambda * nu[j]) * half[j];
                    alone += Math.Abs(gradient[j]) * half[j];
                }
                // …or with the unboxed one.
                upper = Math.Min(upper, Math.Min(paired, box is null ? double.PositiveInfinity : alone));
            }
            double achieved = dual.Achievable(nu, centre);
            if (achieved > best)
            {
                best = achieved;
                nu.CopyTo(bestNu, 0);
            }
            return new Cell(centre, half, nu, upper);
        }

        var queue = new PriorityQueue<Cell, double>();
        var root = Evaluate(Enumerable.Range(0, k).Select(j => (low[j] + high[j]) / 2).ToArray(),
                            Enumerable.Range(0, k).Select(j => Math.Max(0, (high[j] - low[j]) / 2)).ToArray(), new double[k]);
        queue.Enqueue(root, -root.Upper);
        double gap = double.PositiveInfinity;
        while (queue.TryPeek(out var top, out _))
        {
            gap = Math.Max(top.Upper, prunedUpper) - best;
            if (gap <= AllowedGap(best) || evaluated >= Settings.MaxNodes) break;
            queue.Dequeue();
            int split = 0;
            for (int j = 1; j < k; j++) if (top.Half[j] > top.Half[split]) split = j;
            if (top.Half[split] <= 1e-13 * (1 + Math.Abs(top.Centre[split])))
            {
                // Below double resolution: the cell cannot be refined; its bound stays in the certified gap.
                prunedUpper = Math.Max(prunedUpper, top.Upper);
                continue;
            }
            for (int side = -1; side <= 1; side += 2)
            {
                var half = (double[])top.Half.Clone();
                half[split] /= 2;
                var centre = (double[])top.Centre.Clone();
                centre[split] += side * half[split];
                var child = Evaluate(centre, half, top.Nu);
                if (child.Upper <= best + AllowedGap(best)) prunedUpper = Math.Max(prunedUpper, child.Upper);
                else queue.Enqueue(child, -child.Upper);
            }
        }
        if (queue.Count == 0) gap = Math.Max(prunedUpper - best, 0);

        var y = new double[x.Length];
        _geometry.Lift(x, bestNu, box, y);
        return new ProxSolution(y, Math.Max(gap, 0), false, Name, evaluated);
    }
}

/// <summary>
/// The dual of the cheapest transport to features z, g(z) = min { ½Σwᵢ(yᵢ − xᵢ)² : Ay + c = z, y in the box }:
/// h(ν; z) = ν·(z − c) + Σᵢ[½wᵢ(yᵢ(ν) − xᵢ)² − (Aᵀν)ᵢyᵢ(ν)] with yᵢ(ν) = clamp(xᵢ + (Aᵀν)ᵢ/wᵢ) is a lower bound of g(z)
/// for every ν, tight at the dual optimum. Without a box it is the closed form ν = G⁻¹(z − z₀), h = ½(z − z₀)ᵀG⁻¹(z − z₀).
/// One instance per sample (it holds scratch buffers).
/// </summary>
internal sealed class TransportDual
{
    private readonly FeatureGeometry _geometry;
    private readonly ProxSettings _settings;
    private readonly float[] _x;
    private readonly ValueBox? _box;
    private readonly double[] _y, _shift;

    public TransportDual(FeatureGeometry geometry, ProxSettings settings, ReadOnlySpan<float> x, ValueBox? box)
    {
        _geometry = geometry;
        _settings = settings;
        _x = x.ToArray();
        _box = box;
        Origin = new double[geometry.K];
        geometry.Reward.Project(x, Origin);
        _y = new double[x.Length];
        _shift = new double[x.Length];
    }

    /// <summary>z₀ = Ax + c.</summary>
    public double[] Origin { get; }

    /// <summary>Improves ν (in place, warm-started) towards the dual optimum at <paramref name="z"/>; returns h(ν; z) ≤ g(z).</summary>
    public double Solve(ReadOnlySpan<double> z, Span<double> nu)
    {
        int k = _geometry.K;
        Span<double> d = stackalloc double[k];
        for (int j = 0; j < k; j++) d[j] = z[j] - Origin[j];
        if (_box is null)
        {
            _geometry.Multiply(_geometry.GInverse, d, nu);
            double h = 0;
            for (int j = 0; j < k; j++) h += 0.5 * d[j] * nu[j];
            return h;
        }

        Span<double> grad = stackalloc double[k], step = stackalloc double[k], trial = stackalloc double[k];
        Span<double> hessian = stackalloc double[k * k];
        double value = DualValue(z, nu, grad, hessian);
        double scale = 1;
        for (int j = 0; j < k; j++) scale = Math.Max(scale, Math.Abs(z[j]));
        for (int iteration = 0; iteration < 50; iteration++)
        {
            double norm = 0;
            foreach (double gj in grad) norm = Math.Max(norm, Math.Abs(gj));
            if (norm <= 1e-12 * scale) break;
            // Newton on the concave piecewise-quadratic dual; the regulariser keeps the step finite where every
            // coordinate is clamped (z outside the reachable set: the dual then grows without bound, as it should).
            double trace = 0;
            for (int j = 0; j < k; j++) trace += _geometry.G[j * k + j];
            for (int j = 0; j < k; j++) hessian[j * k + j] += 1e-12 * trace + 1e-300;
            grad.CopyTo(step);
            if (!Numerics.SolveSymmetricPositive(hessian, step)) break;
            double slope = 0;
            for (int j = 0; j < k; j++) slope += grad[j] * step[j];
            double t = 1, next = value;
            bool accepted = false;
            for (int halving = 0; halving < 40; halving++, t /= 2)
            {
                for (int j = 0; j < k; j++) trial[j] = nu[j] + t * step[j];
                next = DualValue(z, trial, null, null);
                if (next >= value + 1e-4 * t * slope) { accepted = true; break; }
            }
            if (!accepted) break;
            trial.CopyTo(nu);
            value = DualValue(z, nu, grad, hessian);
        }
        return value;
    }

    /// <summary>A lower bound of g over the cell m ± η: min_{z in cell} g(z) = max_ν ψ(ν), ψ(ν) = h(ν; m) − Σ|νⱼ|ηⱼ
    /// (weak duality with z free in the cell). ψ is concave, so along the ray tν of the centre's ν it is unimodal in t:
    /// searched by halving (cells straddling the reachable set's boundary, where ν is huge) and doubling (cells wholly
    /// outside it, where ψ grows without bound). Every value found is a valid bound.</summary>
    public double CellLowerBound(ReadOnlySpan<double> centre, ReadOnlySpan<double> half, ReadOnlySpan<double> nu)
    {
        double spread = 0;
        for (int j = 0; j < nu.Length; j++) spread += Math.Abs(nu[j]) * half[j];
        if (_box is null)
        {
            Span<double> d = stackalloc double[_geometry.K];
            for (int j = 0; j < d.Length; j++) d[j] = centre[j] - Origin[j];
            double h = 0;
            for (int j = 0; j < d.Length; j++) h += d[j] * nu[j];
            return h - 0.5 * _geometry.Quadratic(_geometry.G, nu) - spread;
        }
        Span<double> scaled = stackalloc double[nu.Length];
        double best = Psi(centre, 1, nu, spread, scaled), t = 1;
        foreach (double factor in new[] { 0.5, 2.0 })
        {
            double current = best, scale = t;
            for (int step = 0; step < 60; step++)
            {
                double next = Psi(centre, scale * factor, nu, spread, scaled);
                if (!(next > current)) break;
                current = next;
                scale *= factor;
            }
            if (current > best) (best, t) = (current, scale);
            if (t != 1) break; // found the better direction
        }
        return Math.Max(best, 0);
    }

    /// <summary>ψ(tν) on the cell with centre <paramref name="centre"/> and Σ|νⱼ|ηⱼ = <paramref name="spread"/>.</summary>
    private double Psi(ReadOnlySpan<double> centre, double t, ReadOnlySpan<double> nu, double spread, Span<double> buffer)
    {
        for (int j = 0; j < nu.Length; j++) buffer[j] = t * nu[j];
        return DualValue(centre, buffer, default, default) - t * spread;
    }

    /// <summary>The objective f(Ay(ν) + c) − λc(x, y(ν)) of the feasible point y(ν). Without a box y(ν) has features
    /// exactly <paramref name="z"/> when ν is the closed-form optimum.</summary>
    public double Achievable(ReadOnlySpan<double> nu, ReadOnlySpan<double> z)
    {
        var f = _geometry.Reward.Function;
        if (_box is null)
        {
            Span<double> d = stackalloc double[_geometry.K];
            for (int j = 0; j < d.Length; j++) d[j] = z[j] - Origin[j];
            return f.Value(z) - _settings.Lambda * 0.5 * _geometry.Quadratic(_geometry.GInverse, d);
        }
        _geometry.Lift(_x, nu, _box, _y);
        Span<double> features = stackalloc double[_geometry.K];
        _geometry.Reward.Project(_y, features);
        return f.Value(features) - _settings.Lambda * _settings.Cost.Evaluate(_x, _y);
    }

    /// <summary>h(ν; z), and optionally its gradient z − c − Ay(ν) and Hessian −Σ_free AᵢAᵢᵀ/wᵢ negated (positive semidefinite).</summary>
    private double DualValue(ReadOnlySpan<double> z, ReadOnlySpan<double> nu, Span<double> gradient, Span<double> negatedHessian)
    {
        var reward = _geometry.Reward;
        int k = _geometry.K, n = _x.Length;
        var box = _box!.Value;
        Array.Clear(_shift);
        for (int j = 0; j < k; j++)
        {
            var row = reward.Feature(j);
            for (int i = 0; i < n; i++) _shift[i] += nu[j] * row[i];
        }
        double value = 0;
        for (int j = 0; j < k; j++) value += nu[j] * (z[j] - reward.Offsets[j]);
        bool wantDerivatives = !gradient.IsEmpty;
        if (wantDerivatives)
        {
            for (int j = 0; j < k; j++) gradient[j] = z[j] - reward.Offsets[j];
            negatedHessian.Clear();
        }
        for (int i = 0; i < n; i++)
        {
            double w = _settings.Cost.Weight(i), free = _x[i] + _shift[i] / w, y = box.Clamp(free), delta = y - _x[i];
            value += 0.5 * w * delta * delta - _shift[i] * y;
            if (!wantDerivatives) continue;
            bool clamped = y != free;
            for (int j = 0; j < k; j++)
            {
                double aj = reward.Feature(j)[i];
                gradient[j] -= aj * y;
                if (clamped) continue;
                for (int l = 0; l <= j; l++) negatedHessian[j * k + l] += aj * reward.Feature(l)[i] / w;
            }
        }
        if (wantDerivatives)
            for (int j = 0; j < k; j++)
                for (int l = 0; l < j; l++) negatedHessian[l * k + j] = negatedHessian[j * k + l];
        return value;
    }
}
