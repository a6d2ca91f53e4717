using OnnxAlign.Core;
using OnnxAlign.Rewards;

namespace OnnxAlign.Alignment.Prox;

/// <summary>Settings of the Wasserstein prox T(x) = argmax_y { r(y) − λ·c(x, y) } (DESIGN §3).</summary>
public sealed record ProxSettings
{
    /// <summary>λ &gt; 0: the price of moving; larger keeps samples closer to the model's.</summary>
    public required double Lambda { get; init; }

    /// <summary>c; by default ½‖x − y‖².</summary>
    public TransportCost Cost { get; init; } = TransportCost.Euclidean;

    /// <summary>The valid value range, or null for none (<c>--no-clamp</c>).</summary>
    public ValueBox? Box { get; init; }

    /// <summary>Certified optimality gap to reach, relative: gap ≤ tolerance·max(1, |objective|).</summary>
    public double Tolerance { get; init; } = 1e-4;

    /// <summary>Branch-and-bound cells at most per sample; the certified gap reached is reported either way. (Boxed
    /// problems with k ≥ 2 whose optimum sits on an edge of the reachable set can need more cells than this.)</summary>
    public int MaxNodes { get; init; } = 20_000;

    /// <summary>Iterations at most of the iterative solvers.</summary>
    public int MaxIterations { get; init; } = 20_000;
}

/// <summary>What the prox did to one sample: reward before/after, transport cost c(x, T(x)), the objective
/// r(T(x)) − λ·c(x, T(x)), the certified optimality gap, and whether the value box was active.</summary>
public readonly record struct ProxResult(double RewardBefore, double RewardAfter, double TransportCost, double Objective,
                                         double CertifiedGap, bool BoxActive, string Method, int Iterations);

/// <summary>
/// The Wasserstein prox oracle T(x) = argmax_y { r(y) − λ·c(x, y) } (DESIGN §3), with the algorithm picked from the
/// reward's declared structure:
/// <list type="bullet">
/// <item>linear r = ⟨a, y⟩ + b: closed form T(x) = x + W⁻¹a/λ (clamped coordinate-wise: the boxed problem separates);</item>
/// <item>r = f(Ay + c), f smooth concave, k ≤ 3: the exact k-dim reduction solved by Newton with line search;</item>
/// <item>r = f(Ay + c), f L-Lipschitz (not concave), k ≤ 3: global Lipschitz branch-and-bound over the a-priori search
/// radius, to a certified gap;</item>
/// <item>r smooth concave in full dimension (k &gt; 3): L-BFGS with a strong-concavity stopping certificate;</item>
/// <item>with a value box that the unconstrained optimum leaves: the boxed problem directly, by spectral projected
/// gradient (concave r) or by branch-and-bound over the boxed transport dual (Lipschitz r).</item>
/// </list>
/// Solve is thread-safe: the oracle holds only read-only precomputed state.
/// </summary>
public sealed class ProxOracle
{
    private readonly ProxSolver _solver;

    /// <summary>An oracle for <paramref name="reward"/> under <paramref name="settings"/>.</summary>
    /// <exception cref="ArgumentException">λ or the tolerance out of range, cost weights of another size, or a reward
    /// with no exact prox algorithm.</exception>
    public ProxOracle(Reward reward, ProxSettings settings)
    {
        if (!(settings.Lambda > 0) || double.IsInfinity(settings.Lambda))
            throw new ArgumentOutOfRangeException(nameof(settings), settings.Lambda, "λ must be finite and > 0");
        if (!(settings.Tolerance > 0)) throw new ArgumentOutOfRangeException(nameof(settings), settings.Tolerance, "the tolerance must be > 0");
        if (settings.Cost.IsWeighted && settings.Cost.Size != reward.Size)
            throw new ArgumentException($"cost weights have {settings.Cost.Size} values, samples have {reward.Size}");
        if (settings.Box is { } box && !(box.Lower < box.Upper)) throw new ArgumentException($"value box [{box.Lower}, {box.Upper}] is empty");
        if (!reward.HasGradient)
            throw ConfigException.For("reward", $"'{reward.Name}' is a network reward without a gradient: the prox needs one. Fit a linear or low-rank reward to it (fit-reward) for the W2 prox, or use KL alignment (DESIGN §8)");
        // The linear prox moves every sample by a/(λw): a step past the float range is bad input, found before any run.
        if (reward is LinearReward linearReward && settings.Box is null &&
            Enumerable.Range(0, linearReward.Size).Any(i => !float.IsFinite((float)(linearReward.Direction[i] / (settings.Lambda * settings.Cost.Weight(i))))))
            throw ConfigException.For("lambda", $"{settings.Lambda}: the prox's step a/λ overflows (not finite); use a larger λ or a value box");
        Reward = reward;
        Settings = settings;
        _solver = reward switch
        {
            LinearReward linear => new LinearProx(linear, settings),
            FeatureReward { Function: { Curvature: Curvature.Concave, IsSmooth: true } } f when f.FeatureCount <= 3 => new LowRankNewtonProx(f, settings),
            FeatureReward { Function: { Curvature: Curvature.Concave, IsSmooth: true } } f => new ConcaveAscentProx(f, settings),
            FeatureReward f when f.FeatureCount <= 3 && double.IsFinite(f.Function.LipschitzConstant) => new BranchAndBoundProx(f, settings),
            FeatureReward f => throw new ArgumentException(
                $"reward '{f.Name}': no exact prox for {f.Function.Name} on {f.FeatureCount} features; supported: linear rewards, smooth concave f " +
                "(any k), and Lipschitz f with k ≤ 3"),
            _ => throw new ArgumentException($"reward '{reward.Name}': unsupported reward type {reward.GetType().Name}"),
        };
    }

    /// <summary>r.</summary>
    public Reward Reward { get; }

    /// <summary>λ, c, box and tolerances.</summary>
    public ProxSettings Settings { get; }

    /// <summary>The algorithm chosen from the reward's structure (the boxed variant is reported per sample).</summary>
    public string Method => _solver.Name;

    /// <summary>y = T(x) for one sample; returns what happened.</summary>
    /// <exception cref="ConfigException">λ is so small that T(x) leaves the float range (parameter <c>lambda</c>).</exception>
    public ProxResult Solve(ReadOnlySpan<float> x, Span<float> y)
    {
        if (x.Length != Reward.Size || y.Length != Reward.Size) throw new ArgumentException($"samples have {Reward.Size} values, got {x.Length} → {y.Length}");
        var solution = _solver.Solve(x);
        for (int i = 0; i < y.Length; i++) y[i] = (float)solution.Y[i];
        if (Numerics.AllFinite(x) && !Numerics.AllFinite(y))
            throw ConfigException.For("lambda", $"{Settings.Lambda}: the prox moves a sample past the float range (T(x) is not finite); use a larger λ or a value box");
        // Report what the caller gets (the float sample), keeping the certificate honest for the rounding.
        double rewardAfter = Reward.Evaluate(y), cost = Settings.Cost.Evaluate(x, y);
        double objective = rewardAfter - Settings.Lambda * cost;
        double exactObjective = Reward.Evaluate(solution.Y) - Settings.Lambda * Settings.Cost.Evaluate(x, solution.Y);
        return new ProxResult(Reward.Evaluate(x), rewardAfter, cost, objective, solution.Gap + Math.Max(0, exactObjective - objective),
                              solution.BoxActive, solution.Method, solution.Iterations);
    }
}

/// <summary>A solver's answer before it is rounded to float: y, its certified gap, whether the box was active.</summary>
internal readonly record struct ProxSolution(double[] Y, double Gap, bool BoxActive, string Method, int Iterations);

/// <summary>One exact prox algorithm for one reward structure.</summary>
internal abstract class ProxSolver(ProxSettings settings)
{
    protected ProxSettings Settings { get; } = settings;

    protected double Lambda => Settings.Lambda;

    public abstract string Name { get; }

    public abstract ProxSolution Solve(ReadOnlySpan<float> x);

    /// <summary>The absolute gap the relative tolerance allows at objective value <paramref name="objective"/>.</summary>
    protected double AllowedGap(double objective) => Settings.Tolerance * Math.Max(1, Math.Abs(objective));

    /// <summary>True when y violates the box (so the boxed problem must be solved).</summary>
    protected bool LeavesBox(ReadOnlySpan<double> y) => Settings.Box is { } box && !box.Contains(y);
}

/// <summary>Linear r: T(x) = x + W⁻¹a/λ (DESIGN §3); the boxed problem separates by coordinate, so clamping is exact.</summary>
internal sealed class LinearProx(LinearReward reward, ProxSettings settings) : ProxSolver(settings)
{
    public override string Name => "linear-closed-form";

    public override ProxSolution Solve(ReadOnlySpan<float> x)
    {
        var y = new double[x.Length];
        var a = reward.Direction;
        bool active = false;
        for (int i = 0; i < y.Length; i++)
        {
            double free = x[i] + a[i] / (Lambda * Settings.Cost.Weight(i));
            y[i] = Settings.Box is { } box ? box.Clamp(free) : free;
            active |= y[i] != free;
        }
        return new ProxSolution(y, 0, active, Name, 0);
    }
}
