using System.Numerics.Tensors;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>The dual method of <see cref="ConstrainedAlignment"/>.</summary>
public enum DualMethod
{
    /// <summary>μ ← Π(μ − η·slack): projected gradient ascent on the dual.</summary>
    ProjectedAscent,

    /// <summary>μ ← Π(μ + (S Cov_q(r) S)⁻¹(−slack)) on the free multipliers: Newton with the estimated reward covariance.</summary>
    Newton,
}

/// <summary>Settings of the constrained solver.</summary>
public sealed record ConstrainedSettings
{
    /// <summary>Exactly tilted samples per iterate (the estimates of E_q[r] and Cov_q(r)).</summary>
    public int SamplesPerIteration { get; init; } = 512;

    /// <summary>Iteration limit.</summary>
    public int MaxIterations { get; init; } = 40;

    /// <summary>Newton (default) or projected ascent.</summary>
    public DualMethod Method { get; init; } = DualMethod.Newton;

    /// <summary>η of projected ascent (in units of 1/Var_p(r)).</summary>
    public double StepSize { get; init; } = 1.0;

    /// <summary>Constraints count as met within this many standard errors.</summary>
    public double Z { get; init; } = 2.0;

    /// <summary>A multiplier beyond this (in units of 1/std_p(r)) means the constraints cannot be met: reported as infeasible.</summary>
    public double MaxMultiplier { get; init; } = 1000;

    /// <summary>Samples per network call.</summary>
    public int BatchSize { get; init; } = 256;

    /// <summary>Noise seed; every iterate uses its own seed, the final check another.</summary>
    public long Seed { get; init; }

    /// <summary>
    /// How each iterate's tilt is sampled: the exact tilt's SMC (DESIGN §1d; its count and seed are the iterate's), or
    /// null for the fast tilt of the given denoiser (exact for the true score only: its moments are biased for strong
    /// tilts on trained networks, and so is the μ they lead to).
    /// </summary>
    public ExactTiltSettings? Exact { get; init; }

    /// <summary>
    /// How <see cref="ConstrainedAlignment.Run"/> samples the solution's tilt: <see cref="KlTiltMode.Exact"/> (SMC with
    /// <see cref="Exact"/>'s settings, or the defaults when it is null) or <see cref="KlTiltMode.Fast"/>; the hybrid mode is
    /// refused. The command line sets it and <see cref="Exact"/> together: exact iterates with an exact final tilt, or fast ones.
    /// </summary>
    public KlTiltMode FinalMode { get; init; } = KlTiltMode.Exact;
}

/// <summary>One iterate of the dual solver (report.json's <c>constrained.trace</c> items, as <see cref="IO.ReportJson"/> writes it).</summary>
/// <param name="Iteration">k.</param>
/// <param name="Mu">μ_k (≥ 0 for inequalities).</param>
/// <param name="Expected">E_{q_k}[r_i].</param>
/// <param name="StandardErrors">Their standard errors.</param>
/// <param name="Slacks">s_i(E_{q_k}[r_i] − b_i): ≥ 0 where met.</param>
/// <param name="KlDivergence">KL(q_k‖p): the exact tilt's own estimate from its SMC weights in the exact mode; in the fast mode
/// E_{q_k}⟨θ_k, x⟩ − log Z(θ_k) with log Z telescoped over the iterates (DESIGN §1).</param>
public sealed record DualIterate(int Iteration, double[] Mu, double[] Expected, double[] StandardErrors, double[] Slacks, double KlDivergence);

/// <summary>The outcome of <see cref="ConstrainedAlignment.Solve"/>.</summary>
public sealed class ConstrainedResult
{
    internal ConstrainedResult(IReadOnlyList<Constraint> constraints, DualMethod method, double[] mu, float[] theta, double[] thresholds, double[] baseMeans,
                               double[] baseStds, List<DualIterate> trace, bool converged, string? infeasible, DualIterate check, long evaluations)
    {
        (Constraints, Method, Mu, Theta, Thresholds, BaseMeans, BaseStds, Trace, Converged, Infeasible, Check, NetworkEvaluations) =
            (constraints, method, mu, theta, thresholds, baseMeans, baseStds, trace, converged, infeasible, check, evaluations);
    }

    /// <summary>The constraints solved for, in order (the multipliers' order).</summary>
    public IReadOnlyList<Constraint> Constraints { get; }

    /// <summary>The dual method used.</summary>
    public DualMethod Method { get; }

    /// <summary>The multipliers μ*.</summary>
    public double[] Mu { get; }

    /// <summary>The tilt θ = Σ_i μ_i s_i a_i of the solution q ∝ p·exp⟨θ, x⟩.</summary>
    public float[] Theta { get; }

    /// <summary>The thresholds b_i (relative ones resolved against the base batch).</summary>
    public double[] Thresholds { get; }

    /// <summary>E_p[r_i] from the base batch.</summary>
    public double[] BaseMeans { get; }

    /// <summary>std_p(r_i) from the base batch.</summary>
    public double[] BaseStds { get; }

    /// <summary>Every iterate.</summary>
    public IReadOnlyList<DualIterate> Trace { get; }

    /// <summary>True when the KKT conditions held within the standard errors.</summary>
    public bool Converged { get; }

    /// <summary>The constraint that cannot be met, when the dual diverged; null otherwise.</summary>
    public string? Infeasible { get; }

    /// <summary>The constraints on a fresh batch of q_μ* (independent seeds).</summary>
    public DualIterate Check { get; }

    /// <summary>Network evaluations spent (those of the run that solved it, when it was read back from a checkpoint).</summary>
    public long NetworkEvaluations { get; }

    /// <summary>True when the solution was read back from a checkpoint (a resumed run) rather than solved.</summary>
    public bool Resumed { get; private init; }

    /// <summary>The checkpoint note of this solution.</summary>
    internal ConstrainedNote ToNote() => new(Method, Mu, Theta, Thresholds, BaseMeans, BaseStds, [.. Trace], Converged, Infeasible, Check, NetworkEvaluations);

    /// <summary>The solution a checkpoint note keeps, for <paramref name="constraints"/>.</summary>
    internal static ConstrainedResult FromNote(ConstrainedNote note, IReadOnlyList<Constraint> constraints) =>
        new(constraints.ToArray(), note.Method, note.Mu, note.Theta, note.Thresholds, note.BaseMeans, note.BaseStds, note.Trace, note.Converged,
            note.Infeasible, note.Check, note.NetworkEvaluations) { Resumed = true };

    /// <summary>report.json's <c>constrained</c> block of this solution.</summary>
    public ConstrainedReport Report => new(
        Method == DualMethod.Newton ? "newton" : "projected-ascent",
        Constraints.Select((c, i) => new ConstraintReport(c.Text, Thresholds[i], BaseMeans[i], BaseStds[i], Mu[i], Check.Expected[i], Check.StandardErrors[i],
                                                          Check.Slacks[i], Check.Slacks[i] >= -3 * Check.StandardErrors[i])).ToArray(),
        Converged, Infeasible, Trace[^1].KlDivergence, Trace, NetworkEvaluations);
}

/// <summary>report.json's <c>constrained</c> block (DESIGN §4), serialised by <see cref="IO.ReportJson"/>.</summary>
/// <param name="Method"><c>newton</c> or <c>projected-ascent</c>.</param>
/// <param name="Constraints">Each constraint's threshold, base moments, multiplier and fresh check.</param>
/// <param name="Converged">The KKT conditions held within the standard errors.</param>
/// <param name="InfeasibleConstraint">The constraint that cannot be met, or null.</param>
/// <param name="KlDivergence">KL(q‖p) of the last iterate.</param>
/// <param name="Trace">Every iterate.</param>
/// <param name="NetworkEvaluations">Network evaluations of the dual.</param>
public sealed record ConstrainedReport(string Method, IReadOnlyList<ConstraintReport> Constraints, bool Converged, string? InfeasibleConstraint,
                                       double KlDivergence, IReadOnlyList<DualIterate> Trace, long NetworkEvaluations);

/// <summary>One constraint in report.json's <c>constrained.constraints</c>.</summary>
/// <param name="Text">The constraint as given.</param>
/// <param name="Threshold">b (a relative threshold resolved).</param>
/// <param name="BaseMean">E_p[r] from the base batch.</param>
/// <param name="BaseStd">std_p(r) from the base batch.</param>
/// <param name="Multiplier">μ*.</param>
/// <param name="FreshMean">E_q[r] on a fresh batch of the solution.</param>
/// <param name="FreshStandardError">Its standard error.</param>
/// <param name="FreshSlack">s·(E_q[r] − b) on that batch: ≥ 0 where met.</param>
/// <param name="Met">The fresh slack is within 3 standard errors of met.</param>
public sealed record ConstraintReport(string Text, double Threshold, double BaseMean, double BaseStd, double Multiplier, double FreshMean,
                                      double FreshStandardError, double FreshSlack, bool Met);

/// <summary>What <see cref="ConstrainedAlignment.Run"/> returned: the dual's solution, its report block and, when the constraints can be met, the samples.</summary>
/// <param name="Dual">The dual solution (θ, μ, trace, fresh check, infeasible constraint, convergence).</param>
/// <param name="Final">The solution's tilt sampled with its <c>final_tilt</c> block; null when the constraints cannot be met together (<see cref="ConstrainedResult.Infeasible"/>).</param>
public sealed record ConstrainedAlignmentResult(ConstrainedResult Dual, FinalTilt? Final)
{
    /// <summary>report.json's <c>constrained</c> block.</summary>
    public ConstrainedReport Report => Dual.Report;

    /// <summary>Network evaluations of the dual and the final samples together.</summary>
    public long NetworkEvaluations => Dual.NetworkEvaluations + (Final?.Result.Samples.NetworkEvaluations ?? 0);

    /// <summary>True when the dual's solution came from the checkpoint (a resumed run) rather than being solved again.</summary>
    public bool Resumed => Dual.Resumed;
}

/// <summary>
/// min KL(q‖p) subject to E_q[r_i] (≥ | ≤ | =) b_i for linear rewards r_i = ⟨a_i, x⟩ + c_i (DESIGN §4). The solution is
/// the tilt q_μ ∝ p·exp(Σ_i μ_i s_i r_i), μ maximising the concave dual D(μ) = Σ_i μ_i s_i b_i − log E_p exp(Σ_i μ_i s_i r_i)
/// over μ_i ≥ 0 (inequalities), with ∇D = −slack and ∇²D = −S Cov_q(r) S. Every iterate is one tilt, sampled by the
/// exact tilt's SMC when <see cref="ConstrainedSettings.Exact"/> is set (the CLI's default), else by the fast tilt.
/// </summary>
public static class ConstrainedAlignment
{
    /// <summary>
    /// Solves the dual, then samples its solution's tilt p·exp⟨θ*, x⟩ in <see cref="ConstrainedSettings.FinalMode"/>: the
    /// library entry point of constrained alignment (what <c>onnxalign align --constraint</c> runs). The dual's iterates
    /// use the base law with x̂0 projected onto <paramref name="range"/> (DESIGN §1d), as the final tilt does.
    /// </summary>
    /// <param name="network">The model's denoiser (not disposed here: the caller owns it).</param>
    /// <param name="range">The data range x̂0 is projected onto; null for none.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="constraints">The constraints (at least one).</param>
    /// <param name="settings">The dual's settings (its seed is the iterates'; the request's seed is the final samples') and the final tilt's mode.</param>
    /// <param name="request">Count, batch, seed, NaN policy and cancellation of the final samples; its cancellation stops the dual too.</param>
    /// <param name="iterates">Each dual iterate, as it is found.</param>
    /// <param name="progress">Samples finished of the final tilt (exact tilt: effective samples of the target).</param>
    /// <param name="checkpoint">
    /// A resumable run's checkpoint, null for none: the dual's solution is saved there once found (θ, μ, the trace, the
    /// fresh check, infeasibility and cost, exactly) and read back by a resumed run instead of solving again
    /// (<see cref="ConstrainedResult.Resumed"/>), and the final tilt keeps its finished batches (or SMC systems) there.
    /// The caller keys it to everything that determines the run (a run plan's fingerprint).
    /// </param>
    /// <param name="solved">
    /// The dual's solution, solved or read back, before the final tilt is sampled (and, when solved, before it is saved
    /// to <paramref name="checkpoint"/>): what a caller keeps of it is then on disk before the checkpoint says it was found.
    /// </param>
    /// <returns>The dual and, unless the constraints cannot be met together, the samples; never throws for infeasibility.</returns>
    /// <exception cref="ConfigException">The hybrid final mode (parameter <c>mode</c>); a checkpoint whose saved solution is not of these constraints (parameter <c>checkpoint</c>).</exception>
    /// <exception cref="NonFiniteException">A final sample turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/> (the dual's solution is kept in the checkpoint).</exception>
    /// <exception cref="OperationCanceledException">The request's cancellation fired (within one network call).</exception>
    public static ConstrainedAlignmentResult Run(IDenoiser network, DataRange? range, Sampler sampler, IReadOnlyList<Constraint> constraints, ConstrainedSettings settings,
                                                 GenerationRequest request, IProgress<DualIterate>? iterates = null, IProgress<GenerationProgress>? progress = null,
                                                 BatchCheckpoint? checkpoint = null, IProgress<ConstrainedResult>? solved = null)
    {
        FinalTilt.CheckMode(settings.FinalMode);
        ConstrainedResult dual;
        if (SolutionNote.Read<ConstrainedNote>(checkpoint) is { } note)
        {
            SolutionNote.CheckSizes(note.Mu.Length == constraints.Count && note.Theta.Length == network.SampleSize);
            dual = ConstrainedResult.FromNote(note, constraints);
            solved?.Report(dual);
        }
        else
        {
            dual = Solve(ExactTilt.BaseLaw(network, range), sampler, constraints, settings, iterates, request.Cancellation);
            solved?.Report(dual);
            SolutionNote.Write(checkpoint, dual.ToNote());
        }
        if (dual.Infeasible is not null) return new ConstrainedAlignmentResult(dual, null);
        return new ConstrainedAlignmentResult(dual, FinalTilt.Sample(network, range, sampler, dual.Theta, settings.FinalMode, settings.Exact, request, progress, checkpoint));
    }

    /// <summary>Solves the dual (the global set-up of a constrained run, DESIGN §10); <paramref name="iterates"/> sees each iterate.</summary>
    /// <param name="denoiser">The base law p (the caller projects it, <see cref="ExactTilt.BaseLaw"/>).</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="constraints">The constraints (at least one).</param>
    /// <param name="settings">The dual's settings; null for the defaults.</param>
    /// <param name="iterates">Each iterate, as it is found.</param>
    /// <param name="cancellation">Stops the solve within one network call (<see cref="NetworkCancellation"/>).</param>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> fired.</exception>
    public static ConstrainedResult Solve(IDenoiser denoiser, Sampler sampler, IReadOnlyList<Constraint> constraints, ConstrainedSettings? settings = null,
                                          IProgress<DualIterate>? iterates = null, CancellationToken cancellation = default)
    {
        settings ??= new ConstrainedSettings();
        if (constraints.Count == 0) throw new ArgumentException("no constraints");
        // Each iterate's E[r] and Cov(r) (the Newton step, the slacks' standard errors) need at least two samples.
        if (settings.SamplesPerIteration < 2) throw ConfigException.For("ConstrainedSettings.SamplesPerIteration", $"{settings.SamplesPerIteration}: expected ≥ 2 (an iterate's covariance needs two samples)");
        // Every network call below (iterates, SMC systems, the fresh check) sees the token, through any decorator.
        using var cancellationScope = NetworkCancellation.Enter(cancellation);
        int m = constraints.Count, size = denoiser.SampleSize;
        var signs = constraints.Select(c => (double)c.Sign).ToArray();
        long evaluations = 0;
        // KL(q_μ‖p) = E_q⟨θ, x⟩ − log Z(θ), log Z telescoped over the iterates (DESIGN §1): the fast mode's estimate.
        double KlByTelescoping(double[] mu, float[] drawn, double logZ) => LogPartition.Projections(drawn, Theta(constraints, mu, size)).Average() - logZ;
        double? drawnKl = null;   // the exact tilt's own KL of the last draw (its SMC weights), where there is one
        (float[] Samples, double[][] Rewards) Draw(double[] mu, long seed)
        {
            drawnKl = null;
            var theta = Theta(constraints, mu, size);
            float[] drawn;
            if (settings.Exact is { } exact && mu.Any(v => v != 0))
            {
                // The iterate's law exactly (resampled SMC particles): the moments, the Newton step and the telescoped
                // log Z then rest on q_μ itself, not on the fast tilt's biased version of it.
                var smc = ExactTilt.Sample(denoiser, null, sampler, theta,
                    exact with { Count = settings.SamplesPerIteration, Smc = exact.Smc with { Seed = seed } });
                evaluations += smc.Particles.NetworkEvaluations;
                drawn = smc.Samples;
                drawnKl = smc.KlDivergence.Value;
            }
            else
            {
                IDenoiser d = mu.All(v => v == 0) ? denoiser : new LinearTilt(denoiser, theta);
                var run = Generation.Run(d, sampler, new GenerationRequest { Count = settings.SamplesPerIteration, BatchSize = settings.BatchSize, Seed = seed });
                evaluations += run.NetworkEvaluations;
                drawn = run.Samples;
            }
            return (drawn, constraints.Select(c => c.Reward.EvaluateBatch(drawn)).ToArray());
        }

        var mu = new double[m];
        var (samples, rewards) = Draw(mu, settings.Seed);
        var baseMeans = rewards.Select(r => r.Average()).ToArray();
        var baseStds = rewards.Select((r, i) => Math.Sqrt(r.Sum(v => (v - baseMeans[i]) * (v - baseMeans[i])) / (r.Length - 1))).ToArray();
        var b = constraints.Select((c, i) => c.Threshold.Resolve(baseMeans[i], baseStds[i])).ToArray();
        var scale = baseStds.Select(s => Math.Max(s, 1e-12)).ToArray();

        var trace = new List<DualIterate>();
        double logZ = 0;
        string? infeasible = null;
        bool converged = false;
        for (int k = 0; ; k++)
        {
            var iterate = Measure(k, mu, samples, rewards, b, signs, constraints, drawnKl ?? KlByTelescoping(mu, samples, logZ));
            trace.Add(iterate);
            iterates?.Report(iterate);
            cancellation.ThrowIfCancellationRequested();
            if (Satisfied(iterate, mu, constraints, settings.Z)) { converged = true; break; }
            if (k >= settings.MaxIterations) break;

            var next = settings.Method == DualMethod.Newton
                ? NewtonStep(mu, rewards, iterate, signs, constraints)
                : mu.Select((v, i) => v - settings.StepSize * iterate.Slacks[i] / (scale[i] * scale[i])).ToArray();
            for (int i = 0; i < m; i++) if (constraints[i].Relation != Relation.Equal) next[i] = Math.Max(0, next[i]);
            int runaway = Enumerable.Range(0, m).FirstOrDefault(i => Math.Abs(next[i]) * scale[i] > settings.MaxMultiplier, -1);
            if (runaway >= 0)
            {
                // The dual is unbounded along this multiplier: no q meets the constraints together. Name the worst-violated one.
                int worst = Enumerable.Range(0, m).OrderBy(i => iterate.Slacks[i] / Math.Max(iterate.StandardErrors[i], 1e-12)).First();
                infeasible = constraints[worst].Text;
                break;
            }
            // log Z(θ_{k+1}) = log Z(θ_k) + log E_{q_k} exp⟨θ_{k+1} − θ_k, x⟩ (DESIGN §1, telescoping), overflow-safe.
            var delta = Theta(constraints, next.Select((v, i) => v - mu[i]).ToArray(), size);
            var exponents = new double[samples.Length / size];
            for (int j = 0; j < exponents.Length; j++) exponents[j] = TensorPrimitives.Dot(samples.AsSpan(j * size, size), delta);
            logZ += Numerics.LogSumExp(exponents) - Math.Log(exponents.Length);
            mu = next;
            (samples, rewards) = Draw(mu, settings.Seed + 7919L * (k + 1));
        }
        var (checkSamples, checkRewards) = Draw(mu, settings.Seed - 104_729L);
        var check = Measure(trace.Count, mu, checkSamples, checkRewards, b, signs, constraints, drawnKl ?? KlByTelescoping(mu, checkSamples, logZ));
        return new ConstrainedResult(constraints.ToArray(), settings.Method, mu, Theta(constraints, mu, size), b, baseMeans, baseStds, trace, converged, infeasible, check, evaluations);
    }

    /// <summary>θ = Σ_i μ_i s_i a_i.</summary>
    public static float[] Theta(IReadOnlyList<Constraint> constraints, double[] mu, int size)
    {
        var theta = new float[size];
        for (int i = 0; i < constraints.Count; i++)
            TensorPrimitives.MultiplyAdd(constraints[i].Reward.Direction, (float)(mu[i] * constraints[i].Sign), theta, theta);
        return theta;
    }

    private static DualIterate Measure(int k, double[] mu, float[] samples, double[][] rewards, double[] b, double[] signs,
                                       IReadOnlyList<Constraint> constraints, double kl)
    {
        int m = rewards.Length;
        var expected = new double[m];
        var errors = new double[m];
        for (int i = 0; i < m; i++) (expected[i], errors[i]) = LogPartition.MeanAndStandardError(rewards[i]);
        var slacks = expected.Select((e, i) => signs[i] * (e - b[i])).ToArray();
        return new DualIterate(k, (double[])mu.Clone(), expected, errors, slacks, kl);
    }

    /// <summary>KKT within the standard errors: each constraint met, and each inactive one with μ_i = 0.</summary>
    private static bool Satisfied(DualIterate iterate, double[] mu, IReadOnlyList<Constraint> constraints, double z)
    {
        for (int i = 0; i < mu.Length; i++)
        {
            double tolerance = z * iterate.StandardErrors[i];
            if (constraints[i].Relation == Relation.Equal ? Math.Abs(iterate.Slacks[i]) > tolerance : iterate.Slacks[i] < -tolerance) return false;
            if (constraints[i].Relation != Relation.Equal && mu[i] > 0 && iterate.Slacks[i] > tolerance) return false;
        }
        return true;
    }

    /// <summary>Newton on the free multipliers (those not held at 0 by an inactive inequality): Δ = (S C S)⁻¹(−slack).</summary>
    private static double[] NewtonStep(double[] mu, double[][] rewards, DualIterate iterate, double[] signs, IReadOnlyList<Constraint> constraints)
    {
        int m = mu.Length;
        var free = Enumerable.Range(0, m).Where(i => constraints[i].Relation == Relation.Equal || mu[i] > 0 || iterate.Slacks[i] < 0).ToArray();
        var next = (double[])mu.Clone();
        if (free.Length == 0) return next;
        int f = free.Length, n = rewards[0].Length;
        var h = new double[f * f];
        var g = new double[f];
        for (int p = 0; p < f; p++)
        {
            g[p] = -iterate.Slacks[free[p]];
            for (int q = 0; q < f; q++)
            {
                int i = free[p], j = free[q];
                double c = 0;
                for (int t = 0; t < n; t++) c += (rewards[i][t] - iterate.Expected[i]) * (rewards[j][t] - iterate.Expected[j]);
                h[p * f + q] = signs[i] * signs[j] * c / (n - 1);
            }
            h[p * f + p] += 1e-9 * (1 + h[p * f + p]); // keeps the estimated covariance positive definite
        }
        if (!Numerics.SolveSymmetricPositive(h, g)) return next;
        for (int p = 0; p < f; p++) next[free[p]] += g[p];
        return next;
    }
}
