using System.CommandLine;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>The KL-alignment options of <c>generate</c>: a linear reward at temperature λ (θ = a/λ) or a raw θ, sampled
/// by <see cref="KlAlignment"/>, which picks the algorithm (DESIGN §1, §2).</summary>
internal sealed class TiltOptions
{
    private readonly Option<string?> _reward = new("--reward") { Description = $"Reward to align to: {RewardSpec.Forms}." };
    private readonly Option<double?> _lambda = new("--lambda") { Description = "Temperature λ > 0 of the KL alignment (θ = a/λ; smaller = stronger)." };
    private readonly Option<string?> _tilt = new("--tilt") { Description = "A raw tilt θ as .npy (one sample's shape) instead of --reward/--lambda." };
    private readonly Option<string> _mode = new("--tilt-mode") { Description = "exact (default: SMC with exact weights, the plain tilt as proposal; DESIGN §1d), fast (the plain projected tilt, biased on trained networks for strong tilts) or hybrid (Gaussian surrogate where the shift is large, DESIGN §1b; approximate).", DefaultValueFactory = _ => "exact" };
    private readonly Option<int> _particles = new("--particles") { Description = "exact: particles per SMC system (resampling acts within a system).", DefaultValueFactory = _ => 32 };
    private readonly Option<double> _proposalScale = new("--proposal-scale") { Description = "exact, stochastic samplers: the proposal tilt is s·θ (any s in [0, 1] is exact; s changes the ESS).", DefaultValueFactory = _ => 1.0 };
    private readonly Option<double> _essPerSample = new("--ess-per-sample") { Description = "exact: add SMC systems until the effective sample size is this multiple of --count …", DefaultValueFactory = _ => 1.0 };
    private readonly Option<double> _maxParticles = new("--max-particles-per-sample") { Description = "exact: … or until this many particles per returned sample were drawn.", DefaultValueFactory = _ => 16.0 };
    private readonly Option<int> _moves = new("--moves") { Description = "exact, deterministic samplers: Metropolis moves per tempering stage of the noise-space SMC.", DefaultValueFactory = _ => 3 };
    private readonly Option<string?> _dataRange = new("--data-range") { Description = "LO,HI: the range of the data, onto which guidance projects x̂0 (DESIGN §1d); none: no projection. Default: data_moments.json's range, else ±clip_sample_range when the config clips." };
    private readonly Option<double> _trust = new("--trust-radius") { Description = "hybrid: use the surrogate where c_t‖θ‖ > this × the sample's ‖x_t‖ (per sample).", DefaultValueFactory = _ => 1.0 };
    private readonly Option<int> _reference = new("--reference-count") { Description = "Also generate this many untilted samples (same seeds) and report the reward before alignment.", DefaultValueFactory = _ => 0 };
    private readonly Option<int> _logzNodes = new("--logz-nodes") { Description = "Gauss–Legendre nodes of the log Z / KL path quadrature.", DefaultValueFactory = _ => 6 };
    private readonly Option<int> _logzSamples = new("--logz-samples") { Description = "Tilted samples per quadrature node (0 = do not estimate log Z and KL).", DefaultValueFactory = _ => 64 };
    private readonly Option<string> _blackBox = new("--black-box") { Description = "A network reward (onnx:…, DESIGN §8): tilt-smc (default: twisted SMC with a fitted tilt as proposal, exact weights), tilt-is (importance sampling from the fitted tilt), or the baselines fk-steering (SMC with the base proposal), sir (importance resampling from p), best-of-n.", DefaultValueFactory = _ => "tilt-smc" };
    private readonly Option<string> _features = new("--features") { Description = "A network reward: the tilt's features, pca:K (K principal directions of base samples) or FILE.npy (k directions [k, ...sample shape]).", DefaultValueFactory = _ => "pca:16" };
    private readonly Option<int> _pilotRounds = new("--pilot-rounds") { Description = "A network reward: regressions of r/λ on the features that fit the proposal tilt.", DefaultValueFactory = _ => 3 };
    private readonly Option<int> _pilotSamples = new("--pilot-samples") { Description = "A network reward: samples per pilot round.", DefaultValueFactory = _ => 128 };
    private readonly Option<int> _bestOf = new("--best-of") { Description = "--black-box best-of-n: base draws per returned sample.", DefaultValueFactory = _ => 16 };

    public IEnumerable<Option> All => [_reward, _lambda, _tilt, _mode, _particles, _proposalScale, _essPerSample, _maxParticles, _moves, _dataRange,
                                       _trust, _reference, _logzNodes, _logzSamples, .. BlackBoxOptions];

    /// <summary>The options of a network reward's methods (DESIGN §8).</summary>
    public IEnumerable<Option> BlackBoxOptions => [_blackBox, _features, _pilotRounds, _pilotSamples, _bestOf];

    /// <summary>The black-box methods' settings from their options.</summary>
    public BlackBoxSettings ReadBlackBox(ParseResult parse, IDenoiser denoiser)
    {
        var method = BlackBoxAlignment.Parse(parse.GetValue(_blackBox)!)
            ?? throw new UsageException($"--black-box '{parse.GetValue(_blackBox)}': expected tilt-smc, tilt-is, fk-steering, sir or best-of-n");
        int rounds = parse.GetValue(_pilotRounds), samples = parse.GetValue(_pilotSamples), bestOf = parse.GetValue(_bestOf);
        if (rounds is < 1 or > 20) throw new UsageException($"--pilot-rounds {rounds}: expected 1..20");
        if (samples is < 8 or > 100_000) throw new UsageException($"--pilot-samples {samples}: expected 8..100000");
        if (bestOf is < 1 or > 100_000) throw new UsageException($"--best-of {bestOf}: expected 1..100000");
        string features = parse.GetValue(_features)!;
        var fit = new TiltFitSettings { PilotRounds = rounds, PilotSamples = samples };
        if (features.StartsWith("pca:", StringComparison.Ordinal))
        {
            if (!int.TryParse(features.AsSpan(4), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int k) || k < 1 || k >= samples)
                throw new UsageException($"--features '{features}': expected pca:K with 1 ≤ K < --pilot-samples ({samples})");
            fit = fit with { Features = k };
        }
        else
        {
            var array = UsageException.ForFlag("--features", () => NpyFile.Read(features));
            if (array.Data.Length == 0 || array.Data.Length % denoiser.SampleSize != 0 || array.Shape[0] * denoiser.SampleSize != array.Data.Length)
                throw new ConfigException($"--features {features}: shape [{string.Join(", ", array.Shape)}], expected [k, {string.Join(", ", denoiser.SampleShape)}]");
            if (array.Data.Any(v => !float.IsFinite(v))) throw new ConfigException($"--features {features}: contains NaN or infinite values");
            fit = fit with { Directions = array.Data };
        }
        return new BlackBoxSettings { Method = method, Fit = fit, BestOf = bestOf };
    }

    /// <summary>The options of the exact mode and the data range (verify takes these).</summary>
    public IEnumerable<Option> ExactOptions => [_particles, _proposalScale, _essPerSample, _maxParticles, _moves, _dataRange];

    /// <summary>--tilt-mode with the exact mode's options (align and sweep take these).</summary>
    public IEnumerable<Option> ModeOptions => [_mode, .. ExactOptions];

    /// <summary>--tilt-mode as given: exact, fast or hybrid.</summary>
    public KlTiltMode ReadMode(ParseResult parse) => parse.GetValue(_mode) switch
    {
        "exact" => KlTiltMode.Exact,
        "fast" => KlTiltMode.Fast,
        "hybrid" => KlTiltMode.Hybrid,
        var m => throw new UsageException($"--tilt-mode '{m}': expected exact, fast or hybrid"),
    };

    /// <summary>The exact mode's settings from its options (count, seed and NaN policy are the run's).</summary>
    /// <param name="parse">The parsed command line.</param>
    /// <param name="maxParticles">The particle budget per sample when the command sets its own (sweep) instead of --max-particles-per-sample.</param>
    public ExactTiltSettings ReadExact(ParseResult parse, double? maxParticles = null)
    {
        int particles = parse.GetValue(_particles), moves = parse.GetValue(_moves);
        double scale = parse.GetValue(_proposalScale), essPerSample = parse.GetValue(_essPerSample);
        double budget = maxParticles ?? parse.GetValue(_maxParticles);
        if (particles < 2 || particles > 4096) throw new UsageException($"--particles {particles}: expected 2..4096");
        if (!(scale is >= 0 and <= 1)) throw new UsageException($"--proposal-scale {scale}: expected a value in [0, 1]");
        if (!(essPerSample > 0) || essPerSample > 1000) throw new UsageException($"--ess-per-sample {essPerSample}: expected a value in (0, 1000]");
        if (!(budget >= 1) || budget > 100_000) throw new UsageException($"--max-particles-per-sample {budget}: expected a value in [1, 100000]");
        if (moves < 1 || moves > 100) throw new UsageException($"--moves {moves}: expected 1..100");
        return new ExactTiltSettings { ProposalScale = scale, TargetEssPerSample = essPerSample, MaxParticlesPerSample = budget, MovesPerStage = moves,
                                       Smc = new SmcSettings { ParticlesPerSystem = particles } };
    }

    /// <summary>The data range guidance projects onto: --data-range, else the model's (null: unknown or none).</summary>
    public DataRange? DataRange(ParseResult parse, DiffusionModel model)
    {
        string? value = parse.GetValue(_dataRange);
        if (value is null) return model.DataRange;
        if (value == "none") return null;
        var parts = value.Split(',');
        if (parts.Length != 2 || !Numbers.TryParse(parts[0], out double low) || !Numbers.TryParse(parts[1], out double high) || !(low < high))
            throw new UsageException($"--data-range '{value}': expected LO,HI with LO < HI (plain numbers), or none");
        return new DataRange((float)low, (float)high);
    }

    /// <summary>--reward and --lambda as given (the W2 stage uses them too).</summary>
    public (string? Spec, double? Lambda) RewardAndLambda(ParseResult parse) => (parse.GetValue(_reward), parse.GetValue(_lambda));

    /// <summary>What the options ask for, checked before any work is done.</summary>
    /// <param name="parse">The parsed command line.</param>
    /// <param name="denoiser">The model's denoiser (its sample shape).</param>
    /// <param name="modelDirectory">The model folder.</param>
    /// <param name="network">How a network reward is fed (the data range) and run (the runtime options).</param>
    public Plan? Read(ParseResult parse, IDenoiser denoiser, string modelDirectory, NetworkRewardOptions? network = null)
    {
        string? spec = parse.GetValue(_reward), tiltPath = parse.GetValue(_tilt);
        double? lambda = parse.GetValue(_lambda);
        if (spec is null && tiltPath is null)
        {
            if (lambda is not null) throw new UsageException("--lambda needs --reward");
            return null;
        }
        if (spec is not null && tiltPath is not null) throw new UsageException("give either --reward with --lambda or --tilt, not both");
        var mode = ReadMode(parse);
        var exact = ReadExact(parse);
        double trust = parse.GetValue(_trust);
        if (!(trust > 0) || double.IsInfinity(trust)) throw new UsageException($"--trust-radius {trust}: expected a finite value > 0");
        int reference = parse.GetValue(_reference), nodes = parse.GetValue(_logzNodes), perNode = parse.GetValue(_logzSamples);
        if (reference < 0) throw new UsageException($"--reference-count {reference}: expected ≥ 0");
        // Gauss–Legendre is exact for polynomials of degree 2n − 1: beyond 64 nodes the sampling error is all there is.
        if (nodes is < 1 or > 64) throw new UsageException($"--logz-nodes {nodes}: expected 1 to 64");
        if (perNode > 0) Resources.CheckSamples((long)perNode, denoiser.SampleSize, "--logz-samples");
        if (reference > 0) Resources.CheckSamples(reference, denoiser.SampleSize, "--reference-count");
        if (perNode is < 0 or 1) throw new UsageException($"--logz-samples {perNode}: expected 0 (no estimate) or ≥ 2");

        var settings = new KlAlignmentSettings
        {
            Mode = mode, Exact = exact, TrustRadius = trust,
            DataVariance = mode == KlTiltMode.Hybrid ? DataMoments.Read(modelDirectory).Variance : null,
            Partition = new LogPartitionSettings { Nodes = nodes, SamplesPerNode = perNode },
        };
        Reward? reward = null;
        float[] theta = [];
        KlAlgorithm algorithm;
        if (spec is not null)
        {
            if (lambda is not { } l || !(l > 0) || double.IsInfinity(l))
                throw new UsageException($"--lambda {(lambda?.ToString() ?? "missing")}: expected a finite value > 0 with --reward");
            reward = RewardSpec.Parse(spec, denoiser.SampleShape, modelDirectory, network);
            if (reward.IsBlackBox) settings = settings with { BlackBox = ReadBlackBox(parse, denoiser) };
            // The library picks the exact algorithm from the reward's structure: linear → one tilt; convex low-rank → a mixture of tilts.
            try { algorithm = KlAlignment.Choose(reward, l, mode); }
            catch (ConfigException e) when (e.Parameter == "reward") { throw new UsageException($"{Flags.Describe(e)} (--align w2)"); }
            catch (ConfigException e) when (e.Parameter == "mode")
            {
                reward.Dispose();
                throw new UsageException(reward.IsBlackBox ? $"--tilt-mode {parse.GetValue(_mode)}: a network reward is sampled by --black-box's methods, which have no fast or hybrid mode"
                                                           : "--tilt-mode hybrid applies to linear rewards; the KL mixture uses exact tilts");
            }
            // --black-box's options choose among the methods for network rewards; a reward with a declared structure would ignore them.
            // A plan replays every option with its value, so a value equal to the default is no request (the plan's own run).
            if (!reward.IsBlackBox && BlackBoxOptions.FirstOrDefault(option => parse.GetResult(option) is { Implicit: false } result
                                                                             && !Equals(result.GetValueOrDefault<object>(), option.GetDefaultValue())) is { } given)
            {
                reward.Dispose();
                throw new UsageException($"{given.Name}: applies to network rewards (onnx:…); '{spec}' has a declared structure, which the library samples by its own algorithm ({algorithm})");
            }
            if (reward is LinearReward linear) theta = KlAlignment.TiltOf(linear, l);
        }
        else
        {
            if (lambda is not null) throw new UsageException("--lambda is for --reward; --tilt takes θ as it is");
            var array = NpyFile.Read(tiltPath!);
            if (array.Data.Length != denoiser.SampleSize)
                throw new ConfigException($"--tilt {tiltPath}: shape [{string.Join(", ", array.Shape)}], expected {denoiser.SampleSize} values [{string.Join(", ", denoiser.SampleShape)}]");
            if (array.Data.Any(v => !float.IsFinite(v))) throw new ConfigException($"--tilt {tiltPath}: contains NaN or infinite values");
            theta = array.Data;
            algorithm = KlAlignment.ChooseForTilt(mode);
        }
        return new Plan(reward, lambda, theta, algorithm, settings, reference, modelDirectory);
    }

    /// <summary>What generate's KL options ask for: the reward (or a raw θ), the algorithm the library picked, and its settings.</summary>
    internal sealed record Plan(Reward? Reward, double? Lambda, float[] Theta, KlAlgorithm Algorithm, KlAlignmentSettings Settings,
                                int ReferenceCount, string ModelDirectory)
    {
        /// <summary>The linear reward of a tilt (null for a raw θ or a mixture).</summary>
        public LinearReward? Linear => Reward as LinearReward;

        /// <summary>The convex low-rank reward f(Ax) (sampled by the exact SMC or the fast mixture), or null.</summary>
        public FeatureReward? LowRank => Reward as FeatureReward;

        /// <summary>Sampled by SMC with exact weights (a linear tilt or a low-rank reward).</summary>
        public bool IsExact => KlAlignment.IsExact(Algorithm);

        /// <summary>Sampled by an SMC whose systems a plan can fix and shards can split (DESIGN §10): every exact method but best-of-N.</summary>
        public bool IsSmc => KlAlignment.IsSmc(Algorithm, Settings.BlackBox);

        /// <summary>
        /// The plan's SMC set-up applied (DESIGN §10): its number of systems, the proposal's fit or tangent tilt, and for a
        /// shard of several its block of systems; null <paramref name="smc"/> leaves the plan as it is.
        /// </summary>
        public Plan WithSmcSetup(JsonObject? smc, Shard shard) =>
            smc is null || !IsSmc ? this : this with { Settings = ReportJson.FromNode<SmcPlan>(smc).Apply(Settings, shard) };

        public KlTiltMode Mode => Settings.Mode;

        public int LogZNodes => Settings.Partition.Nodes;

        public int LogZSamples => Settings.Partition.SamplesPerNode;

        public ExactTiltSettings Exact => Settings.Exact;
    }
}
