using System.Diagnostics;
using System.Text.Json.Serialization;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;
using static System.Text.Json.Serialization.JsonIgnoreCondition;

namespace OnnxAlign.Evaluation;

/// <summary>What <see cref="BlackBoxBenchmark.Run"/> measures.</summary>
public sealed record BlackBoxBenchmarkSettings
{
    /// <summary>The temperatures λ &gt; 0, one row each.</summary>
    public IReadOnlyList<double> Lambdas { get; init; } = [1, 0.3, 0.1];

    /// <summary>DDPM steps of every method and of the reference.</summary>
    public int Steps { get; init; } = 20;

    /// <summary>Tilt-SMC's and tilt-IS's particles, a multiple of 64 (64-particle systems); the other methods get tilt-SMC's network evaluations.</summary>
    public int Particles { get; init; } = 256;

    /// <summary>Base samples of the importance-weighted reference.</summary>
    public int ReferenceCount { get; init; } = 8192;

    /// <summary>Best-of-N's N.</summary>
    public int BestOf { get; init; } = 16;

    /// <summary>The seed every run's seed is derived from.</summary>
    public long Seed { get; init; }

    /// <summary>The settings, checked: each problem is a <see cref="ConfigException"/> naming the property (<c>BlackBoxBenchmarkSettings.Particles</c>).</summary>
    /// <exception cref="ConfigException">A λ that is not finite and &gt; 0, no λ, or a count that is not positive (particles: not a multiple of 64).</exception>
    public BlackBoxBenchmarkSettings Validated()
    {
        const string prefix = nameof(BlackBoxBenchmarkSettings) + ".";
        if (Lambdas.Count == 0 || Lambdas.Any(l => !(l > 0) || !double.IsFinite(l)))
            throw ConfigException.For(prefix + nameof(Lambdas), $"'{string.Join(",", Lambdas)}': expected comma-separated values > 0");
        if (Steps <= 0) throw ConfigException.For(prefix + nameof(Steps), $"{Steps}: expected a positive integer");
        if (Particles < 64 || Particles % 64 != 0) throw ConfigException.For(prefix + nameof(Particles), $"{Particles}: expected a multiple of 64");
        if (ReferenceCount <= 0) throw ConfigException.For(prefix + nameof(ReferenceCount), $"{ReferenceCount}: expected a positive integer");
        if (BestOf <= 0) throw ConfigException.For(prefix + nameof(BestOf), $"{BestOf}: expected a positive integer");
        return this;
    }
}

/// <summary>The importance-weighted reference at one λ: base samples weighted by e^(r/λ), self-normalised.</summary>
/// <param name="BaseSamples">Base samples weighted.</param>
/// <param name="EffectiveSampleSize">Kish's ESS of the weights.</param>
/// <param name="MeanReward">E_π[r] and its standard error.</param>
/// <param name="ClassRate">π's rate of the reward's class (the reward network's prediction) and its standard error.</param>
public sealed record BlackBoxReference(int BaseSamples, double EffectiveSampleSize, Estimate MeanReward, Estimate ClassRate);

/// <summary>
/// One method at one λ. The weighted methods (tilt-SMC, tilt-IS, FK steering, SIR) have the particle figures, z and
/// their estimates of log Z and KL; best-of-N, no sampler of π, has <see cref="Returned"/> instead. A figure a method does
/// not have is null and left out of the JSON.
/// </summary>
public sealed record BlackBoxMethodRow
{
    /// <summary>The method's name (<see cref="BlackBoxAlignment.Name"/>).</summary>
    public required string Method { get; init; }

    /// <summary>Network evaluations, set-up included (equal for every method: tilt-SMC's set the others' particles).</summary>
    public required long NetworkEvaluations { get; init; }

    /// <summary>Reward network evaluations, the tilt fit's included.</summary>
    public required long RewardEvaluations { get; init; }

    /// <summary>Wall time of the method's run.</summary>
    public required double Seconds { get; init; }

    /// <summary>Weighted particles (weighted methods).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public int? Particles { get; init; }

    /// <summary>Kish's ESS of the particles (weighted methods).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public double? EffectiveSampleSize { get; init; }

    /// <summary>The ESS of the SMC systems' normalising constants (weighted methods).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public double? EffectiveSystems { get; init; }

    /// <summary>SMC systems (weighted methods).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public int? Systems { get; init; }

    /// <summary>ESS per network evaluation (weighted methods); at most <see cref="BlackBoxBenchmarkResult.EssPerEvaluationBound"/>.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public double? EssPerNetworkEvaluation { get; init; }

    /// <summary>Samples returned (best-of-N).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public int? Returned { get; init; }

    /// <summary>E[r] of the method (weighted by its particles' weights, or the plain mean for best-of-N) and its standard error.</summary>
    public required Estimate MeanReward { get; init; }

    /// <summary>The class rate of the method and its standard error.</summary>
    public required Estimate ClassRate { get; init; }

    /// <summary>E[r] − the reference's E_π[r].</summary>
    public required double MeanRewardError { get; init; }

    /// <summary>(E[r] − E_π[r])/√(se² + se_ref²) (weighted methods).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public double? MeanRewardZ { get; init; }

    /// <summary>The class rate − the reference's.</summary>
    public required double ClassRateError { get; init; }

    /// <summary>The method's estimate of log Z (weighted methods).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public Estimate? LogPartition { get; init; }

    /// <summary>The method's estimate of KL(π‖p) (weighted methods).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public Estimate? KlDivergence { get; init; }

    /// <summary>R² of each round of the tilt fit (the methods that fit a tilt).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public IReadOnlyList<double>? TiltFitRSquared { get; init; }
}

/// <summary>One λ of the benchmark: the reference and every method against it.</summary>
/// <param name="Lambda">λ.</param>
/// <param name="Reference">The importance-weighted reference.</param>
/// <param name="Methods">The methods, in <see cref="BlackBoxBenchmark.Methods"/>' order.</param>
public sealed record BlackBoxLambdaRow(double Lambda, BlackBoxReference Reference, IReadOnlyList<BlackBoxMethodRow> Methods);

/// <summary>What <see cref="BlackBoxBenchmark.Run"/> found (<c>bench --black-box</c>'s JSON block <c>black_box</c>, as <see cref="IO.ReportJson"/> writes it).</summary>
/// <param name="Model">The model's folder.</param>
/// <param name="Reward">The network reward as given.</param>
/// <param name="Sampler">The sampler (ddpm).</param>
/// <param name="Steps">Its steps.</param>
/// <param name="Particles">Tilt-SMC's and tilt-IS's particles.</param>
/// <param name="EssPerEvaluationBound">1/steps: no method's ESS per network evaluation can exceed it.</param>
/// <param name="EssPerEvaluationBoundReason">Why.</param>
/// <param name="RewardMsPerSample">The reward network's milliseconds per sample.</param>
/// <param name="NetworkMsPerSampleStep">The diffusion network's milliseconds per sample and step.</param>
/// <param name="ReferenceSource">How the reference is made.</param>
/// <param name="Rows">One row per λ.</param>
public sealed record BlackBoxBenchmarkResult(string Model, string Reward, string Sampler, int Steps, int Particles, double EssPerEvaluationBound,
                                             string EssPerEvaluationBoundReason, double RewardMsPerSample, double NetworkMsPerSampleStep,
                                             string ReferenceSource, IReadOnlyList<BlackBoxLambdaRow> Rows);

/// <summary>
/// What <see cref="BlackBoxBenchmark.Run"/> reports as it goes, in this order: <see cref="BlackBoxCostMeasured"/>,
/// <see cref="BlackBoxReferenceStarted"/> and the reference's <see cref="BlackBoxSampling"/>; then for each λ its
/// <see cref="BlackBoxReferenceWeighted"/> and, for each method, <see cref="BlackBoxMethodStarted"/>, its
/// <see cref="BlackBoxSampling"/> (possibly none) and <see cref="BlackBoxMethodFinished"/>.
/// </summary>
public abstract record BlackBoxBenchmarkProgress;

/// <summary>The reward network's cost against the diffusion network's is measured.</summary>
/// <param name="RewardMsPerSample">The reward network's milliseconds per sample.</param>
/// <param name="NetworkMsPerSampleStep">The diffusion network's milliseconds per sample and step.</param>
public sealed record BlackBoxCostMeasured(double RewardMsPerSample, double NetworkMsPerSampleStep) : BlackBoxBenchmarkProgress;

/// <summary>The reference's base samples are about to be drawn.</summary>
/// <param name="BaseSamples">Base samples.</param>
/// <param name="Sampler">The sampler.</param>
/// <param name="Steps">Its steps.</param>
public sealed record BlackBoxReferenceStarted(int BaseSamples, string Sampler, int Steps) : BlackBoxBenchmarkProgress;

/// <summary>Progress of the run in progress: the reference's (<paramref name="Method"/> null) or a method's.</summary>
/// <param name="Lambda">λ of the method, or null for the reference.</param>
/// <param name="Method">The method, or null for the reference.</param>
/// <param name="Generation">Samples and steps done of that run.</param>
public sealed record BlackBoxSampling(double? Lambda, BlackBoxMethod? Method, GenerationProgress Generation) : BlackBoxBenchmarkProgress;

/// <summary>The reference is weighted for a λ; its methods follow.</summary>
/// <param name="Lambda">λ.</param>
/// <param name="Reference">The reference at λ.</param>
public sealed record BlackBoxReferenceWeighted(double Lambda, BlackBoxReference Reference) : BlackBoxBenchmarkProgress;

/// <summary>A method's run at a λ begins.</summary>
/// <param name="Lambda">λ.</param>
/// <param name="Method">The method.</param>
public sealed record BlackBoxMethodStarted(double Lambda, BlackBoxMethod Method) : BlackBoxBenchmarkProgress;

/// <summary>A method's run at a λ is measured.</summary>
/// <param name="Lambda">λ.</param>
/// <param name="Method">The method.</param>
/// <param name="Row">Its figures.</param>
public sealed record BlackBoxMethodFinished(double Lambda, BlackBoxMethod Method, BlackBoxMethodRow Row) : BlackBoxBenchmarkProgress;

/// <summary>
/// DESIGN §8's methods on a network reward at equal network evaluations (<c>onnxalign bench MODEL --black-box</c>,
/// issue #18), against a high-budget reference that does not assume them: self-normalised importance weighting of many
/// base samples of the same sampler. For each λ: ESS per network evaluation, E_π[r] and the class rate with their errors
/// against the reference, network and reward evaluations; and the reward network's own cost.
/// </summary>
public static class BlackBoxBenchmark
{
    /// <summary>The methods, in the order they run at each λ (tilt-SMC first: its network evaluations set the others' budget).</summary>
    public static IReadOnlyList<BlackBoxMethod> Methods { get; } =
        [BlackBoxMethod.TiltSmc, BlackBoxMethod.TiltImportance, BlackBoxMethod.FeynmanKac, BlackBoxMethod.ImportanceResampling, BlackBoxMethod.BestOfN];

    /// <summary>Why no method's ESS per network evaluation exceeds 1/steps (<see cref="BlackBoxBenchmarkResult.EssPerEvaluationBoundReason"/>).</summary>
    public const string BoundReason =
        "ESS ≤ particles and every particle costs ≥ one network evaluation per step (tilted proposals two), so ESS per evaluation ≤ 1/steps for any method";

    /// <summary>How the reference is made (<see cref="BlackBoxBenchmarkResult.ReferenceSource"/>).</summary>
    public const string ReferenceSource =
        "self-normalised importance weighting of base samples of the same sampler by e^(r/λ) (assumes none of the methods)";

    /// <summary>Runs the benchmark on <paramref name="model"/> with the network reward <paramref name="reward"/>.</summary>
    /// <param name="model">The model's folder (or its model file).</param>
    /// <param name="reward">The network reward, <c>onnx:PATH@CLASS</c> (a reward spec, read relative to the model's folder).</param>
    /// <param name="settings">λ values, steps, particles, reference size, best-of-N's N and the seed; null for the defaults.</param>
    /// <param name="options">How the networks' sessions are made (the reward network's too); null for the defaults.</param>
    /// <param name="progress">The phases as they begin and end, and the runs' progress (see <see cref="BlackBoxBenchmarkProgress"/>).</param>
    /// <param name="cancellationToken">Stops the benchmark within one network call.</param>
    /// <exception cref="ConfigException">Bad settings (<see cref="BlackBoxBenchmarkSettings.Validated"/>), or a reward that is not a network reward (parameter <c>reward</c>).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public static BlackBoxBenchmarkResult Run(string model, string reward, BlackBoxBenchmarkSettings? settings = null, DenoiserOptions? options = null,
                                              IProgress<BlackBoxBenchmarkProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var s = (settings ?? new BlackBoxBenchmarkSettings()).Validated();
        var located = DiffusionModel.Locate(model);
        using var cancellation = NetworkCancellation.Enter(cancellationToken);
        using var denoiser = located.OpenDenoiser(options);
        var range = located.DataRange;
        using var parsed = RewardSpec.Parse(reward, denoiser.SampleShape, located.Directory, new NetworkRewardOptions(range, options));
        if (parsed is not OnnxReward network)
            throw ConfigException.For(nameof(reward), $"'{reward}': not a network reward; the black-box benchmark needs one (onnx:PATH@CLASS)");
        var sampler = Sampler.Create("ddpm", located.Config, s.Steps);
        var baseLaw = ExactTilt.BaseLaw(denoiser, range);

        // The reward network's own cost against the diffusion network's, per sample.
        var probe = Generation.Run(baseLaw, sampler, new GenerationRequest { Count = 64, BatchSize = 64, Seed = s.Seed + 77, Cancellation = cancellationToken });
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < 4; i++) network.EvaluateBatch(probe.Samples);
        double rewardMs = clock.Elapsed.TotalMilliseconds / (4 * 64);
        double networkMs = probe.ModelTime.TotalMilliseconds / probe.NetworkEvaluations;
        progress?.Report(new BlackBoxCostMeasured(rewardMs, networkMs));

        progress?.Report(new BlackBoxReferenceStarted(s.ReferenceCount, sampler.Name, s.Steps));
        var reference = Generation.Run(baseLaw, sampler,
            new GenerationRequest { Count = s.ReferenceCount, BatchSize = 256, Seed = s.Seed + 9_000_001, Cancellation = cancellationToken },
            progress is null ? null : p => progress.Report(new BlackBoxSampling(null, null, p)));
        var referenceRewards = network.EvaluateBatch(reference.Samples);
        var referenceHits = Hits(network, reference.Samples);

        var rows = new List<BlackBoxLambdaRow>();
        foreach (double lambda in s.Lambdas)
        {
            var logW = referenceRewards.Select(r => r / lambda).ToArray();
            var w = WeightedSamples.Normalize(logW);
            var (refR, refRSe) = WeightedSamples.Mean(referenceRewards, w);
            var (refRate, refRateSe) = WeightedSamples.Mean(referenceHits, w);
            var referenceBlock = new BlackBoxReference(s.ReferenceCount, WeightedSamples.EffectiveSampleSize(w), new Estimate(refR, refRSe), new Estimate(refRate, refRateSe));
            progress?.Report(new BlackBoxReferenceWeighted(lambda, referenceBlock));
            long budget = 0;
            var methods = new List<BlackBoxMethodRow>();
            for (int m = 0; m < Methods.Count; m++)
            {
                var method = Methods[m];
                // Equal network evaluations: tilt-SMC's (pilot rounds included) set the others' particles.
                int particles = method is BlackBoxMethod.TiltSmc or BlackBoxMethod.TiltImportance ? s.Particles
                    : (int)Math.Max(64, Math.Round(budget / (double)s.Steps / 64) * 64);
                const int count = 64;
                var alignment = new KlAlignmentSettings
                {
                    BlackBox = new BlackBoxSettings { Method = method, BestOf = s.BestOf },
                    Exact = new ExactTiltSettings { MaxParticlesPerSample = particles / (double)count, TargetEssPerSample = 1e6, MinSystems = 1,
                                                    Smc = new SmcSettings { ParticlesPerSystem = 64 } },
                };
                int returned = method == BlackBoxMethod.BestOfN ? Math.Max(1, particles / s.BestOf) : count;
                var request = new GenerationRequest { Count = returned, BatchSize = 256, Seed = s.Seed + 1000 * (long)(m + 1), Cancellation = cancellationToken };
                progress?.Report(new BlackBoxMethodStarted(lambda, method));
                clock.Restart();
                var run = KlAlignment.Run(denoiser, range, sampler, network, lambda, alignment, request,
                    progress is null ? null : new InlineProgress<GenerationProgress>(p => progress.Report(new BlackBoxSampling(lambda, method, p))));
                double seconds = clock.Elapsed.TotalSeconds;
                long evaluations = run.Samples.NetworkEvaluations + run.SetupEvaluations;
                if (method == BlackBoxMethod.TiltSmc) budget = evaluations;
                long rewardEvaluations = run.BlackBox!.RewardEvaluations + (run.BlackBox.Fit?.RewardEvaluations ?? 0);
                BlackBoxMethodRow row;
                if (run.Exact is { } exact)
                {
                    var p = exact.Particles;
                    var r = p.Mean(exact.Potentials.Select(g => g * lambda).ToArray());   // G = r/λ at every particle, from the run
                    var rate = p.Mean(Hits(network, p.Samples));
                    row = new BlackBoxMethodRow
                    {
                        Method = BlackBoxAlignment.Name(method), NetworkEvaluations = evaluations, RewardEvaluations = rewardEvaluations, Seconds = seconds,
                        Particles = p.Count, EffectiveSampleSize = p.EffectiveSampleSize, EffectiveSystems = p.SystemEffectiveSize, Systems = p.SystemSizes.Count,
                        EssPerNetworkEvaluation = p.EffectiveSampleSize / evaluations,
                        MeanReward = r, ClassRate = rate,
                        MeanRewardError = r.Value - refR,
                        MeanRewardZ = (r.Value - refR) / Math.Sqrt(r.StandardError * r.StandardError + refRSe * refRSe),
                        ClassRateError = rate.Value - refRate,
                        LogPartition = exact.LogPartition, KlDivergence = exact.KlDivergence,
                        TiltFitRSquared = run.BlackBox.Fit is { } fit ? fit.Rounds.Select(x => x.RSquared).ToArray() : null,
                    };
                }
                else
                {
                    // Best-of-N is no sampler of π: its mean is reported, its error says how far from π it lands.
                    var r = network.EvaluateBatch(run.Samples.Samples);
                    var hits = Hits(network, run.Samples.Samples);
                    double mean = r.Average(), rate = hits.Average();
                    row = new BlackBoxMethodRow
                    {
                        Method = BlackBoxAlignment.Name(method), NetworkEvaluations = evaluations, RewardEvaluations = rewardEvaluations, Seconds = seconds,
                        Returned = run.Samples.Count,
                        MeanReward = new Estimate(mean, Std(r) / Math.Sqrt(r.Length)), ClassRate = new Estimate(rate, Std(hits) / Math.Sqrt(hits.Length)),
                        MeanRewardError = mean - refR, ClassRateError = rate - refRate,
                    };
                }
                methods.Add(row);
                progress?.Report(new BlackBoxMethodFinished(lambda, method, row));
            }
            rows.Add(new BlackBoxLambdaRow(lambda, referenceBlock, methods));
        }
        // No method can beat this: the ESS of N particles is at most N, and a particle costs at least one network
        // evaluation per step (the tilted methods two), so ESS per evaluation ≤ 1/steps.
        return new BlackBoxBenchmarkResult(located.Directory, reward, sampler.Name, s.Steps, s.Particles, 1.0 / s.Steps, BoundReason,
                                           rewardMs, networkMs, ReferenceSource, rows);
    }

    /// <summary>1 where the reward network's predicted class is the reward's class, else 0.</summary>
    private static double[] Hits(OnnxReward network, float[] samples)
    {
        var outputs = network.Outputs(samples);
        int classes = network.Model.OutputSizes[0];
        return Enumerable.Range(0, outputs.Length / classes)
            .Select(i => Numerics.ArgMax<float>(outputs.AsSpan(i * classes, classes)) == network.Index ? 1.0 : 0.0).ToArray();
    }

    private static double Std(double[] v)
    {
        double m = v.Average();
        return v.Length < 2 ? 0 : Math.Sqrt(v.Sum(x => (x - m) * (x - m)) / (v.Length - 1));
    }
}
