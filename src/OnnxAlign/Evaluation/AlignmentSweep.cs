using System.Text.Json.Serialization;
using OnnxAlign.Alignment;
using OnnxAlign.Alignment.Prox;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Evaluation;

/// <summary>
/// The figures of one set of samples in a sweep, measured by an independent evaluator (report rows of sweep.json).
/// The optional figures are the method's own diagnostics: the exact tilt's particles and KL, the fast tilt's drift.
/// </summary>
/// <param name="TargetRate">The evaluator's rate of the target class (NaN without a target class or samples).</param>
/// <param name="Reward">The mean reward r(x) (NaN without samples).</param>
/// <param name="RmsDistanceToBase">The RMS distance to the base samples of the same seeds; NaN where the samples are not paired with them.</param>
public sealed record SweepFigures(double TargetRate, double Reward, double RmsDistanceToBase)
{
    /// <summary>The exact tilt's effective sample size of its weighted particles.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? EffectiveSampleSize { get; init; }

    /// <summary>The exact tilt's network evaluations per effective sample.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? EvaluationsPerEffectiveSample { get; init; }

    /// <summary>The exact tilt's estimate of KL(q‖p).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? KlDivergence { get; init; }

    /// <summary>That estimate's standard error.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? KlStandardError { get; init; }

    /// <summary>Distinct samples among the exact tilt's resampled ones.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public int? DistinctSamples { get; init; }

    /// <summary>Whether the fast tilt's drift diagnostic found it drifting (DESIGN §1d).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public bool? Drifting { get; init; }

    /// <summary>The fast tilt's largest relative drift.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public double? MaxRelativeDrift { get; init; }
}

/// <summary>
/// One (method, λ) point of a sweep: its figures, the first samples a grid shows, the fast tilt's drift per step and the
/// point's cost. A sweep with a checkpoint keeps each point once measured, so that a resumed sweep redoes only the missing ones.
/// </summary>
/// <param name="Method">One of <see cref="AlignmentSweep.Methods"/>.</param>
/// <param name="Lambda">λ.</param>
/// <param name="Figures">The point's figures.</param>
/// <param name="Grid">The first <see cref="AlignmentSweepSettings.GridSamples"/> samples (fewer where fewer were made), one after the other.</param>
/// <param name="Drift">The fast tilt's drift along θ per step, in standard deviations of ⟨θ̂, x0⟩; null for the other methods.</param>
/// <param name="DriftThreshold">The drift diagnostic's relative threshold (0 without a drift).</param>
/// <param name="NetworkEvaluations">The point's network evaluations (0 for the prox, which moves the base samples).</param>
public sealed record SweepPoint(string Method, double Lambda, SweepFigures Figures, float[] Grid, double[]? Drift, double DriftThreshold, long NetworkEvaluations);

/// <summary>A row of sweep.json: a point's method, λ and figures.</summary>
/// <param name="Method">The method.</param>
/// <param name="Lambda">λ.</param>
/// <param name="Figures">Its figures.</param>
public sealed record SweepRow(string Method, double Lambda, SweepFigures Figures);

/// <summary>
/// sweep.json as a typed record (written by <see cref="IO.ReportJson"/>): what was swept on what, the base samples'
/// figures and one row per measured point.
/// </summary>
/// <param name="Model">The network's ONNX file.</param>
/// <param name="Reward">The linear reward's specification.</param>
/// <param name="TargetClass">The evaluator class whose rate is measured; null for none.</param>
/// <param name="Count">Samples per method and λ.</param>
/// <param name="Sampler">The sampler's name.</param>
/// <param name="Steps">Its steps.</param>
/// <param name="Seed">Sample i's noise stream is seed + i.</param>
/// <param name="DataVariance">The hybrid surrogate's data variance (DESIGN §1b).</param>
/// <param name="DataRange">The data range x̂0 is projected onto, [low, high]; null for none.</param>
/// <param name="Base">The base samples' figures.</param>
/// <param name="Rows">The points measured, in the order run.</param>
public sealed record SweepTable(string Model, string Reward, string? TargetClass, int Count, string Sampler, int Steps, long Seed, double DataVariance,
                                float[]? DataRange, SweepFigures Base, IReadOnlyList<SweepRow> Rows);

/// <summary>What a sweep reports as it goes: a stage's sampling progress, and each finished stage's figures.</summary>
/// <param name="Stage">"base", or the point's method and λ (e.g. <c>KL exact λ=0.1</c>).</param>
/// <param name="Sampling">The stage's sampling progress; null when the stage finished.</param>
/// <param name="BaseFigures">The base samples' figures, once they are measured.</param>
/// <param name="Point">A finished point.</param>
/// <param name="Recalled">Whether that point was taken from the checkpoint of an interrupted sweep.</param>
/// <param name="DataVariance">With the base figures: the hybrid surrogate's data variance the sweep uses.</param>
/// <param name="NetworkEvaluations">With a finished stage: the network evaluations the sweep has made so far (none for what it took from the checkpoint).</param>
public sealed record SweepProgress(string Stage, GenerationProgress? Sampling, SweepFigures? BaseFigures = null, SweepPoint? Point = null, bool Recalled = false,
                                   double DataVariance = double.NaN, long NetworkEvaluations = 0);

/// <summary>The settings of <see cref="AlignmentSweep.Run"/>.</summary>
public sealed record AlignmentSweepSettings
{
    /// <summary>The temperatures λ &gt; 0 to sweep.</summary>
    public required IReadOnlyList<double> Lambdas { get; init; }

    /// <summary>Samples per method and λ (the same seeds throughout).</summary>
    public int Count { get; init; } = 256;

    /// <summary>Sample i uses noise stream seed + i.</summary>
    public long Seed { get; init; }

    /// <summary>The evaluator class whose rate is measured; −1 for none.</summary>
    public int TargetClass { get; init; } = -1;

    /// <summary>The exact tilt's settings (its particle budget per returned sample; its SMC's seed).</summary>
    public ExactTiltSettings Exact { get; init; } = new();

    /// <summary>What a NaN/±∞ sample does (stop, or drop it).</summary>
    public NonFinitePolicy OnNonFinite { get; init; } = NonFinitePolicy.Stop;

    /// <summary>The hybrid surrogate's data variance (the model folder's, <see cref="DataMoments.Variance"/>, where it declares one); null: the base samples' (DESIGN §1b).</summary>
    public double? DataVariance { get; init; }

    /// <summary>How many of each point's first samples <see cref="SweepPoint.Grid"/> keeps.</summary>
    public int GridSamples { get; init; } = 8;

    /// <summary>Stops the sweep within one network call.</summary>
    public CancellationToken Cancellation { get; init; }
}

/// <summary>A finished sweep: the base samples' figures and grid, and every point.</summary>
/// <param name="Base">The base samples' figures.</param>
/// <param name="BaseGrid">Their first samples (what a grid shows).</param>
/// <param name="DataVariance">The hybrid surrogate's data variance used.</param>
/// <param name="Points">The points, λ by λ, in the order of <see cref="AlignmentSweep.Methods"/>.</param>
/// <param name="NetworkEvaluations">The network evaluations this call made (the base samples' and the points'; none for the batches and points a resumed sweep took from its checkpoint).</param>
public sealed record AlignmentSweepResult(SweepFigures Base, float[] BaseGrid, double DataVariance, IReadOnlyList<SweepPoint> Points, long NetworkEvaluations);

/// <summary>
/// KL alignment (the exact tilt by SMC, the fast projected tilt and the hybrid tilt, DESIGN §1, §1b, §1d) and
/// Wasserstein alignment (prox, §3) of one linear reward across λ, measured by an independent evaluator: the target
/// class rate, the mean reward, and the RMS distance to the base samples of the same seeds (not for the exact tilt,
/// whose SMC resamples, nor where samples were dropped). The prox moves the base samples themselves.
/// </summary>
public static class AlignmentSweep
{
    /// <summary>The methods of every λ, in the order run.</summary>
    public static IReadOnlyList<string> Methods { get; } = ["kl-exact", "kl-fast", "kl-hybrid", "w2-prox"];

    /// <summary>The checkpoint note a point is kept in.</summary>
    public static string NoteName(string method, double lambda) => FormattableString.Invariant($"point_{method}_{lambda:R}.json");

    /// <summary>The class a <c>class:NAME</c> reward names (the sweep's default target class), or null for another reward.</summary>
    public static string? ClassOf(string rewardSpecification) =>
        rewardSpecification.StartsWith("class:", StringComparison.Ordinal) ? rewardSpecification[6..].Split('@')[0] : null;

    /// <summary>
    /// Runs the sweep: the base samples, then every method at every λ on the same seeds, each measured by
    /// <paramref name="evaluator"/>.
    /// </summary>
    /// <param name="network">The model's denoiser (not disposed here: the caller owns it).</param>
    /// <param name="range">The data range x̂0 is projected onto; null for none.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="reward">The linear reward (θ = a/λ).</param>
    /// <param name="evaluator">The independent evaluator (not disposed here).</param>
    /// <param name="settings">λ values, count, seed, target class, the exact tilt's budget, the NaN policy, cancellation.</param>
    /// <param name="checkpoint">Where the base samples' batches and each finished point are kept, so that a resumed sweep repeats neither; null for none.</param>
    /// <param name="progress">Each stage's sampling progress and each finished stage's figures, reported on the sweep's thread.</param>
    /// <exception cref="ArgumentException">No λ, a λ that is not finite and positive, or a count below one.</exception>
    /// <exception cref="NonFiniteException">A sample turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/>; the points reported are those finished.</exception>
    /// <exception cref="OperationCanceledException">The settings' cancellation fired.</exception>
    public static AlignmentSweepResult Run(IDenoiser network, DataRange? range, Sampler sampler, LinearReward reward, ImageEvaluator evaluator,
                                           AlignmentSweepSettings settings, BatchCheckpoint? checkpoint = null, IProgress<SweepProgress>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.Lambdas.Count == 0) throw new ArgumentException("no λ to sweep", nameof(settings));
        foreach (double lambda in settings.Lambdas)
            if (!(lambda > 0) || !double.IsFinite(lambda)) throw new ArgumentException($"λ = {lambda}: expected a finite value > 0", nameof(settings));
        if (settings.Count < 1) throw new ArgumentException($"count {settings.Count}: expected at least 1", nameof(settings));
        int size = network.SampleSize;
        var request = new GenerationRequest
        {
            Count = settings.Count, BatchSize = Math.Min(settings.Count, 256), Seed = settings.Seed, OnNonFinite = settings.OnNonFinite,
            Cancellation = settings.Cancellation,
        };

        // The base samples' batches go to the checkpoint (a resumed sweep reads them back).
        var baseRun = Generation.Run(ExactTilt.BaseLaw(network, range), sampler, request with { Checkpoint = checkpoint }, Sampling(progress, "base"));
        long evaluations = baseRun.NetworkEvaluations;
        // Hybrid surrogate: the data variance given, else from this base batch (DESIGN §1b).
        double variance = settings.DataVariance ?? Numerics.ColumnVariances(baseRun.Samples.AsSpan(0, baseRun.Count * size).ToArray(), size).Average();
        var baseFigures = Measure(evaluator, network.SampleShape, reward, settings.TargetClass, baseRun.Samples, baseRun.Count, baseRun.Samples);
        progress?.Report(new SweepProgress("base", null, BaseFigures: baseFigures, DataVariance: variance, NetworkEvaluations: evaluations));

        var points = new List<SweepPoint>();
        foreach (double lambda in settings.Lambdas)
            foreach (string method in Methods)
            {
                SweepPoint Measured() => RunPoint(method, lambda, network, range, sampler, reward, settings, request, variance, evaluator, baseRun, progress);
                bool recalled = false;
                var point = checkpoint is null ? Measured() : checkpoint.Remember(NoteName(method, lambda), Measured, out recalled);
                points.Add(point);
                if (!recalled) evaluations += point.NetworkEvaluations;
                progress?.Report(new SweepProgress(Stage(method, lambda), null, Point: point, Recalled: recalled, NetworkEvaluations: evaluations));
            }
        return new AlignmentSweepResult(baseFigures, First(baseRun.Samples, Math.Min(settings.GridSamples, baseRun.Count), size), variance, points, evaluations);
    }

    /// <summary>sweep.json's record of a finished (or partly finished) sweep.</summary>
    /// <param name="model">The network's ONNX file.</param>
    /// <param name="reward">The reward's specification.</param>
    /// <param name="targetClass">The target class's name; null for none.</param>
    /// <param name="settings">The sweep's settings.</param>
    /// <param name="sampler">Its sampler.</param>
    /// <param name="range">Its data range.</param>
    /// <param name="dataVariance">The hybrid surrogate's data variance used.</param>
    /// <param name="baseFigures">The base samples' figures.</param>
    /// <param name="points">The points measured.</param>
    public static SweepTable Table(string model, string reward, string? targetClass, AlignmentSweepSettings settings, Sampler sampler, DataRange? range,
                                   double dataVariance, SweepFigures baseFigures, IEnumerable<SweepPoint> points)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(sampler);
        return new SweepTable(model, reward, targetClass, settings.Count, sampler.Name, sampler.Steps, settings.Seed, dataVariance,
                              range is { } r ? [r.Low, r.High] : null, baseFigures, points.Select(p => new SweepRow(p.Method, p.Lambda, p.Figures)).ToArray());
    }

    /// <summary>A point's stage name in progress reports.</summary>
    public static string Stage(string method, double lambda) => method switch
    {
        "kl-exact" => FormattableString.Invariant($"KL exact λ={lambda:G3}"),
        "kl-fast" => FormattableString.Invariant($"KL fast λ={lambda:G3}"),
        "kl-hybrid" => FormattableString.Invariant($"KL hybrid λ={lambda:G3}"),
        _ => FormattableString.Invariant($"W2 prox λ={lambda:G3}"),
    };

    private static SweepPoint RunPoint(string method, double lambda, IDenoiser network, DataRange? range, Sampler sampler, LinearReward reward, AlignmentSweepSettings settings,
                                       GenerationRequest request, double variance, ImageEvaluator evaluator, GenerationResult baseRun, IProgress<SweepProgress>? progress)
    {
        int size = network.SampleSize;
        var sampling = Sampling(progress, Stage(method, lambda));
        var theta = KlAlignment.TiltOf(reward, lambda);
        GenerationResult result;
        SweepFigures extra = new(double.NaN, double.NaN, double.NaN);
        double[]? drift = null;
        double threshold = 0;
        switch (method)
        {
            case "kl-exact":
            case "kl-fast":
                var run = KlAlignment.RunTilt(network, range, sampler, theta,
                    new KlAlignmentSettings { Mode = method == "kl-exact" ? KlTiltMode.Exact : KlTiltMode.Fast, Exact = settings.Exact }, request,
                    sampling is null ? null : new InlineProgress<GenerationProgress>(sampling));
                result = run.Samples;
                if (run.Exact is { } exact)
                    extra = extra with
                    {
                        EffectiveSampleSize = exact.Particles.EffectiveSampleSize, EvaluationsPerEffectiveSample = exact.Particles.EvaluationsPerEffectiveSample,
                        KlDivergence = exact.KlDivergence.Value, KlStandardError = exact.KlDivergence.StandardError, DistinctSamples = exact.DistinctSamples,
                    };
                else
                {
                    var report = run.Drift!;
                    var direction = report.Directions[0];
                    drift = direction.Drifts.Select(v => direction.FinalStd > 0 ? v / direction.FinalStd : 0).ToArray();
                    threshold = report.Thresholds.Relative;
                    extra = extra with { Drifting = report.IsDrifting, MaxRelativeDrift = report.MaxRelativeDrift };
                }
                break;
            case "kl-hybrid":
                result = KlAlignment.RunTilt(network, range, sampler, theta, new KlAlignmentSettings { Mode = KlTiltMode.Hybrid, DataVariance = variance }, request,
                                             sampling is null ? null : new InlineProgress<GenerationProgress>(sampling)).Samples;
                break;
            default:
                var moved = ProxStage.Apply(new ProxOracle(reward, new ProxSettings { Lambda = lambda, Box = ValueBox.Pixels }),
                                            baseRun.Samples.AsSpan(0, baseRun.Count * size), sampling, cancellation: settings.Cancellation).Samples;
                result = new GenerationResult(moved, baseRun.FirstIndex, baseRun.Count, 0, TimeSpan.Zero, TimeSpan.Zero, baseRun.Indices);
                break;
        }
        // The exact tilt resamples SMC particles: its samples are not paired with the base seeds; nor are they where samples were skipped.
        bool paired = method != "kl-exact" && result.Indices.SequenceEqual(baseRun.Indices);
        var figures = Measure(evaluator, network.SampleShape, reward, settings.TargetClass, result.Samples, result.Count, paired ? baseRun.Samples : null);
        return new SweepPoint(method, lambda, extra with { TargetRate = figures.TargetRate, Reward = figures.Reward, RmsDistanceToBase = figures.RmsDistanceToBase },
                              First(result.Samples, Math.Min(settings.GridSamples, result.Count), size), drift, threshold,
                              method == "w2-prox" ? 0 : result.NetworkEvaluations);
    }

    private static Action<GenerationProgress>? Sampling(IProgress<SweepProgress>? progress, string stage) =>
        progress is null ? null : p => progress.Report(new SweepProgress(stage, p));

    /// <summary>The first <paramref name="count"/> samples (what the grid shows).</summary>
    private static float[] First(float[] samples, int count, int size) => samples.AsSpan(0, count * size).ToArray();

    /// <summary>The figures of <paramref name="count"/> samples; the RMS distance only against base samples of the same seeds.</summary>
    private static SweepFigures Measure(ImageEvaluator evaluator, IReadOnlyList<int> shape, Reward reward, int targetClass, float[] samples, int count, float[]? baseSamples)
    {
        int size = reward.Size;
        var values = samples.AsSpan(0, count * size).ToArray();
        var evaluation = evaluator.Evaluate(values, count, shape);
        double rate = targetClass < 0 || count == 0 ? double.NaN : Enumerable.Range(0, count).Count(i => evaluation.Predicted(i) == targetClass) / (double)count;
        double distance = double.NaN;
        if (baseSamples is not null && values.Length > 0)
        {
            distance = 0;
            for (long i = 0; i < values.Length; i++) distance += (values[i] - baseSamples[i]) * (double)(values[i] - baseSamples[i]);
            distance = Math.Sqrt(distance / values.Length);
        }
        return new SweepFigures(rate, count == 0 ? double.NaN : reward.EvaluateBatch(values).Average(), distance);
    }
}
