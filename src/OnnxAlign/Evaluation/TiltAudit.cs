using System.Numerics.Tensors;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Evaluation;

/// <summary>A per-sample statistic compared between the ground truth and an aligned run (a reward, a class indicator, …).</summary>
/// <param name="Name">What it is.</param>
/// <param name="Evaluate">Its value for each of <c>count</c> samples laid out one after another.</param>
public sealed record AuditStatistic(string Name, Func<float[], int, double[]> Evaluate);

/// <summary>What <see cref="TiltAudit"/> runs.</summary>
public sealed record AuditSettings
{
    /// <summary>Base samples for the importance-weighting ground truth.</summary>
    public int BaseCount { get; init; } = 4096;

    /// <summary>Samples of each aligned run (for the exact mode: returned samples; its particles are audited).</summary>
    public int Count { get; init; } = 256;

    /// <summary>Samples per network call of the base and fast runs.</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>Seed of the base run; aligned runs use other seeds, so they are independent of it.</summary>
    public long Seed { get; init; }

    /// <summary>Audit the exact mode (SMC).</summary>
    public bool Exact { get; init; } = true;

    /// <summary>Audit the fast mode (the plain projected tilt).</summary>
    public bool Fast { get; init; } = true;

    /// <summary>The exact mode's settings (count and seed are set by the audit).</summary>
    public ExactTiltSettings ExactSettings { get; init; } = new();

    /// <summary>|z| above which a statistic disagrees.</summary>
    public double ZThreshold { get; init; } = 4.0;

    /// <summary>The ground truth's ESS below which it is reported as unreliable.</summary>
    public double ReliableEss { get; init; } = 200;
}

/// <summary>One statistic of one run against the ground truth.</summary>
/// <param name="Statistic">Its name.</param>
/// <param name="Truth">The importance-weighted base estimate.</param>
/// <param name="Run">The aligned run's estimate.</param>
/// <param name="Z">(run − truth)/√(se_run² + se_truth²).</param>
public sealed record AuditRow(string Statistic, Estimate Truth, Estimate Run, double Z);

/// <summary>One audited run.</summary>
/// <param name="Mode">exact or fast.</param>
/// <param name="Rows">Its statistics against the truth.</param>
/// <param name="KlDivergence">The KL(q‖p) the run reports.</param>
/// <param name="KlZ">Its z against the truth's KL.</param>
/// <param name="NetworkEvaluations">What the run cost.</param>
/// <param name="EffectiveSampleSize">The run's ESS (its sample count for the fast mode).</param>
/// <param name="Drift">The drift diagnostic (fast mode).</param>
/// <param name="MeanSample">The run's (weighted) mean sample.</param>
/// <param name="Seconds">Wall time.</param>
public sealed record AuditRun(string Mode, IReadOnlyList<AuditRow> Rows, Estimate KlDivergence, double KlZ, long NetworkEvaluations,
                              double EffectiveSampleSize, DriftReport? Drift, float[] MeanSample, double Seconds)
{
    /// <summary>The largest |z| over the statistics.</summary>
    public double MaxAbsZ => Rows.Count == 0 ? 0 : Rows.Max(r => Math.Abs(r.Z));

    /// <summary>Network evaluations per effective sample.</summary>
    public double EvaluationsPerEffectiveSample => NetworkEvaluations / EffectiveSampleSize;
}

/// <summary>The ground truth of an audit: self-normalised importance weights w ∝ e^{⟨θ, x⟩} of base samples.</summary>
/// <param name="BaseCount">Base samples.</param>
/// <param name="EffectiveSampleSize">Kish's ESS of the weights.</param>
/// <param name="Reliable">ESS ≥ the reliability threshold.</param>
/// <param name="Statistics">The weighted means of the statistics.</param>
/// <param name="KlDivergence">E_w[⟨θ,x⟩] − log mean e^{⟨θ,x⟩}.</param>
/// <param name="LogPartition">log mean e^{⟨θ,x⟩}.</param>
/// <param name="MeanSample">The weighted mean sample.</param>
/// <param name="NetworkEvaluations">What the base run cost.</param>
/// <param name="EvaluationsPerEffectiveSample">Network evaluations per effective sample of the ground truth itself.</param>
public sealed record AuditTruth(int BaseCount, double EffectiveSampleSize, bool Reliable, IReadOnlyList<(string Name, Estimate Mean)> Statistics,
                                Estimate KlDivergence, Estimate LogPartition, float[] MeanSample, long NetworkEvaluations, double EvaluationsPerEffectiveSample);

/// <summary>What <c>TiltAudit.Run</c> found.</summary>
/// <param name="Truth">The ground truth.</param>
/// <param name="Runs">The audited runs.</param>
/// <param name="ZThreshold">|z| above which a statistic disagrees.</param>
public sealed record AuditResult(AuditTruth Truth, IReadOnlyList<AuditRun> Runs, double ZThreshold);

/// <summary>
/// The statistics an audit compares (<see cref="TiltAudit.StatisticsFor"/>), with what they need to be evaluated: the
/// model folder's evaluator, when a statistic reads it.
/// </summary>
/// <remarks>Owns the evaluator it opened (an ONNX session): dispose the set after the audit, not before.</remarks>
public sealed class AuditStatisticSet : IDisposable
{
    private readonly ImageEvaluator? _evaluator;

    /// <summary>A set of <paramref name="statistics"/> that owns <paramref name="evaluator"/> (null: none), which they read.</summary>
    /// <exception cref="ArgumentException">Two statistics have the same name (the report is keyed by it).</exception>
    public AuditStatisticSet(IReadOnlyList<AuditStatistic> statistics, ImageEvaluator? evaluator = null)
    {
        ArgumentNullException.ThrowIfNull(statistics);
        TiltAudit.CheckNames(statistics, nameof(statistics));
        Statistics = statistics.ToArray();
        _evaluator = evaluator;
    }

    /// <summary>The statistics, in the order the audit reports them.</summary>
    public IReadOnlyList<AuditStatistic> Statistics { get; }

    /// <summary>The evaluator whose class rate is among the statistics, or null.</summary>
    public ImageEvaluator? Evaluator => _evaluator;

    /// <summary>Disposes the evaluator (the statistics that read it cannot be evaluated after this).</summary>
    public void Dispose() => _evaluator?.Dispose();
}

/// <summary>
/// The ground-truth check of DESIGN §1d, for any model: base samples of the same sampler, steps and base law (the
/// projected network), self-normalised weights w ∝ e^{⟨θ, x⟩}, and each aligned run's statistics, KL and cost against
/// them with z-scores. The ground truth assumes nothing of the tilt, but it is only as good as its ESS: below a few
/// hundred it is reported unreliable (raise the base count).
/// </summary>
public static class TiltAudit
{
    /// <summary>Audits the tilt by θ of <paramref name="sampler"/>'s law on <paramref name="network"/>.</summary>
    public static AuditResult Run(IDenoiser network, DataRange? range, Sampler sampler, ReadOnlySpan<float> theta, IReadOnlyList<AuditStatistic> statistics,
                                  AuditSettings settings, IProgress<string>? progress = null, CancellationToken cancellation = default) =>
        Run(network, range, sampler, [theta.ToArray()], statistics, settings, progress, cancellation)[0];

    /// <summary>Audits several tilts of the same law; the base samples of the ground truth are drawn once and weighted for each θ.</summary>
    /// <exception cref="ArgumentException">Two statistics have the same name (parameter <c>statistics</c>).</exception>
    public static IReadOnlyList<AuditResult> Run(IDenoiser network, DataRange? range, Sampler sampler, IReadOnlyList<float[]> thetas,
                                                 IReadOnlyList<AuditStatistic> statistics, AuditSettings settings, IProgress<string>? progress = null,
                                                 CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(statistics);
        CheckNames(statistics, nameof(statistics));
        var baseLaw = ExactTilt.BaseLaw(network, range);
        progress?.Report($"ground truth: {settings.BaseCount} base samples");
        var baseRun = Generation.Run(baseLaw, sampler, new GenerationRequest { Count = settings.BaseCount, BatchSize = settings.BatchSize, Seed = settings.Seed });
        var baseValues = statistics.Select(s => s.Evaluate(baseRun.Samples, baseRun.Count)).ToArray();
        return thetas.Select((theta, k) =>
        {
            progress?.Report($"θ {k + 1} of {thetas.Count}");
            return Audit(network, range, sampler, theta, statistics, settings, baseRun, baseValues, progress, cancellation);
        }).ToArray();
    }

    private static AuditResult Audit(IDenoiser network, DataRange? range, Sampler sampler, float[] thetaArray, IReadOnlyList<AuditStatistic> statistics,
                                     AuditSettings settings, GenerationResult baseRun, double[][] truthValues, IProgress<string>? progress, CancellationToken cancellation)
    {
        int d = network.SampleSize;
        var baseLaw = ExactTilt.BaseLaw(network, range);
        var logWeights = LogPartition.Projections(baseRun.Samples, thetaArray);
        var weights = WeightedSamples.Normalize(logWeights);
        double ess = WeightedSamples.EffectiveSampleSize(weights);
        var truthMeans = truthValues.Select(v => Estimate(WeightedSamples.Mean(v, weights))).ToArray();
        var truthPotential = Estimate(WeightedSamples.Mean(logWeights, weights));
        var truthLogZ = Estimate(WeightedSamples.LogMeanExp(logWeights));
        var truthKl = Difference(truthPotential, truthLogZ);
        var truth = new AuditTruth(baseRun.Count, ess, ess >= settings.ReliableEss,
            statistics.Select((s, k) => (s.Name, truthMeans[k])).ToArray(), truthKl, truthLogZ, WeightedMean(baseRun.Samples, weights, d),
            baseRun.NetworkEvaluations, baseRun.NetworkEvaluations / ess);

        var runs = new List<AuditRun>();
        if (settings.Exact)
        {
            cancellation.ThrowIfCancellationRequested();
            progress?.Report("exact tilt");
            var exact = ExactTilt.Sample(network, range, sampler, thetaArray,
                settings.ExactSettings with { Count = settings.Count, Smc = settings.ExactSettings.Smc with { Seed = settings.Seed + 7_000_003 } },
                cancellation: cancellation);
            var particles = exact.Particles;
            var rows = statistics.Select((s, k) => Row(s.Name, truthMeans[k], particles.Mean(s.Evaluate(particles.Samples, particles.Count)))).ToList();
            runs.Add(new AuditRun("exact", rows, exact.KlDivergence, Z(exact.KlDivergence, truthKl), particles.NetworkEvaluations,
                                  particles.EffectiveSampleSize, null, WeightedMean(particles.Samples, particles.Weights, d), exact.Time.TotalSeconds));
        }
        if (settings.Fast)
        {
            cancellation.ThrowIfCancellationRequested();
            progress?.Report("fast tilt");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var drift = new DriftDiagnostic(DriftDiagnostic.DefaultDirections(thetaArray), sampler);
            var request = new GenerationRequest { Count = settings.Count, BatchSize = settings.BatchSize, Seed = settings.Seed + 9_000_011 };
            var fast = Generation.Run(ExactTilt.FastTilt(network, thetaArray, range), sampler, request, observer: drift);
            var equal = Enumerable.Repeat(1.0 / fast.Count, fast.Count).ToArray();
            var rows = statistics.Select((s, k) => Row(s.Name, truthMeans[k], MeanAndSe(s.Evaluate(fast.Samples, fast.Count)))).ToList();
            // The fast mode's KL: path quadrature of fast tilts, which assumes they are exact (what the audit checks).
            var stats = LogPartition.Estimate(baseLaw, sampler, thetaArray, nodes: 6, samplesPerNode: 64, seed: settings.Seed + 11_000_027,
                                              batchSize: settings.BatchSize, tiltedProjections: LogPartition.Projections(fast.Samples, thetaArray));
            runs.Add(new AuditRun("fast", rows, stats.KlDivergence, Z(stats.KlDivergence, truthKl), fast.NetworkEvaluations + stats.NetworkEvaluations,
                                  fast.Count, drift.Report(), WeightedMean(fast.Samples, equal, d), clock.Elapsed.TotalSeconds));
        }
        return new AuditResult(truth, runs, settings.ZThreshold);
    }

    private static Estimate MeanAndSe(IReadOnlyList<double> values) => Estimate(LogPartition.MeanAndStandardError(values));

    private static Estimate Estimate((double Value, double Se) e) => new(e.Value, e.Se);

    private static Estimate Difference(Estimate a, Estimate b) => new(a.Value - b.Value, Math.Sqrt(a.StandardError * a.StandardError + b.StandardError * b.StandardError));

    private static double Z(Estimate run, Estimate truth)
    {
        double se = Math.Sqrt(run.StandardError * run.StandardError + truth.StandardError * truth.StandardError);
        return se > 0 ? (run.Value - truth.Value) / se : (run.Value == truth.Value ? 0 : double.PositiveInfinity);
    }

    private static AuditRow Row(string name, Estimate truth, Estimate run) => new(name, truth, run, Z(run, truth));

    private static float[] WeightedMean(float[] samples, ReadOnlySpan<double> weights, int d)
    {
        var mean = new double[d];
        for (int i = 0; i < weights.Length; i++)
            for (int k = 0; k < d; k++) mean[k] += weights[i] * samples[(long)i * d + k];
        return mean.Select(v => (float)v).ToArray();
    }

    /// <summary>
    /// Network evaluations of an audit of several θ (<see cref="Run(IDenoiser, DataRange?, Sampler, IReadOnlyList{float[]}, IReadOnlyList{AuditStatistic}, AuditSettings, IProgress{string}?, CancellationToken)"/>):
    /// the base run of the ground truth, which serves every θ, once, and each audited run.
    /// </summary>
    public static long NetworkEvaluations(IReadOnlyList<AuditResult> results)
    {
        ArgumentNullException.ThrowIfNull(results);
        return (results.Count == 0 ? 0 : results[0].Truth.NetworkEvaluations) + results.Sum(r => r.Runs.Sum(run => run.NetworkEvaluations));
    }

    /// <summary>
    /// The statistics an audit of <paramref name="reward"/> compares, chosen from its structure: those of
    /// <see cref="DefaultStatistics"/> (for a <c>class:</c> reward with every class logit of its classifier), and for a
    /// <c>class:</c> reward whose class the model folder's <c>evaluator/</c> knows, the evaluator's rate of that class
    /// (<c>evaluator-rate:NAME</c>), an independent judge of the samples.
    /// </summary>
    /// <param name="reward">The audited linear reward, as <see cref="RewardSpec.ParseLinear"/> made it (its name is its spec).</param>
    /// <param name="sampleShape">The shape of one sample.</param>
    /// <param name="modelDirectory">The model folder (its <c>classifier/</c> and <c>evaluator/</c>), or null.</param>
    /// <param name="evaluatorOptions">How the evaluator's network is run (null: the defaults).</param>
    /// <param name="dataRange">The samples' data range, as the evaluator is fed (null: [−1, 1]).</param>
    /// <returns>The statistics, owning the evaluator they read: dispose them after the audit.</returns>
    /// <exception cref="ConfigException">The reward's classifier or the evaluator cannot be read (parameters <c>reward</c>, <c>evaluator</c>).</exception>
    public static AuditStatisticSet StatisticsFor(LinearReward reward, IReadOnlyList<int> sampleShape, string? modelDirectory,
                                                  DenoiserOptions? evaluatorOptions = null, DataRange? dataRange = null)
    {
        ArgumentNullException.ThrowIfNull(reward);
        ArgumentNullException.ThrowIfNull(sampleShape);
        const string classPrefix = "class:";
        if (!reward.Name.StartsWith(classPrefix, StringComparison.Ordinal)) return new AuditStatisticSet(DefaultStatistics(reward));
        var (logits, target) = RewardSpec.ClassLogits(reward.Name, sampleShape, modelDirectory);
        var list = DefaultStatistics(reward, logits, target).ToList();
        string? evaluatorDirectory = modelDirectory is null ? null : Path.Combine(modelDirectory, "evaluator");
        if (evaluatorDirectory is null || !File.Exists(Path.Combine(evaluatorDirectory, "model.onnx"))) return new AuditStatisticSet(list);

        var evaluator = new ImageEvaluator(evaluatorDirectory, evaluatorOptions, sampleShape, dataRange);
        try
        {
            string name = reward.Name[classPrefix.Length..].Split('@')[0];
            int k = evaluator.ClassIndex(name);
            if (k < 0)
            {
                evaluator.Dispose();
                return new AuditStatisticSet(list);
            }
            var shape = sampleShape.ToArray();
            list.Add(new AuditStatistic($"evaluator-rate:{(k < evaluator.ClassNames.Length ? evaluator.ClassNames[k] : name)}", (samples, count) =>
            {
                var e = evaluator.Evaluate(samples.AsSpan(0, count * reward.Size), count, shape);
                return Enumerable.Range(0, count).Select(i => e.Predicted(i) == k ? 1.0 : 0.0).ToArray();
            }));
            return new AuditStatisticSet(list, evaluator);
        }
        catch
        {
            evaluator.Dispose();
            throw;
        }
    }

    internal static void CheckNames(IReadOnlyList<AuditStatistic> statistics, string parameter)
    {
        if (statistics.GroupBy(s => s.Name, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"two statistics are named '{twice.Key}' (the audit reports them by name)", parameter);
    }

    /// <summary>The statistics a linear reward's audit compares by default: the reward and the mean brightness (unless the
    /// reward is the brightness); for a class reward also the classifier's rate of that class and the other classes'
    /// logits (directions the reward does not name).</summary>
    public static IReadOnlyList<AuditStatistic> DefaultStatistics(Rewards.LinearReward reward, IReadOnlyList<Rewards.LinearReward>? classLogits = null, int? targetClass = null)
    {
        ArgumentNullException.ThrowIfNull(reward);
        var list = new List<AuditStatistic> { new(reward.Name, (s, n) => reward.EvaluateBatch(s.AsSpan(0, n * reward.Size))) };
        if (classLogits is { Count: > 0 } logits && targetClass is { } k)
        {
            list.Add(new($"rate:{logits[k].Name}", (s, n) =>
            {
                var all = logits.Select(l => l.EvaluateBatch(s.AsSpan(0, n * reward.Size))).ToArray();
                return Enumerable.Range(0, n).Select(i => Enumerable.Range(0, all.Length).MaxBy(c => all[c][i]) == k ? 1.0 : 0.0).ToArray();
            }));
            for (int c = 0; c < logits.Count; c++)
                if (c != k && logits[c].Name != reward.Name) { var l = logits[c]; list.Add(new(l.Name, (s, n) => l.EvaluateBatch(s.AsSpan(0, n * reward.Size)))); }
        }
        // The brightness reward is its own brightness statistic (one name, one row).
        if (reward.Name != "brightness")
            list.Add(new("brightness", (s, n) => Enumerable.Range(0, n).Select(i => (double)TensorPrimitives.Sum(s.AsSpan(i * reward.Size, reward.Size)) / reward.Size).ToArray()));
        return list;
    }
}
