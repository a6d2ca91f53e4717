using System.Numerics.Tensors;
using System.Text.Json.Nodes;
using MathNet.Numerics.LinearAlgebra;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>How π ∝ p·e^{r/λ} is sampled for a reward without structure (DESIGN §8).</summary>
public enum BlackBoxMethod
{
    /// <summary>The default: twisted SMC whose particles move under a fitted tilt q_θ, potentials r/λ on the proposal's x̂0,
    /// resampling when the ESS drops below ½, exact path weights (consistent as the systems grow). Deterministic samplers
    /// run the noise-space SMC instead (no tilt).</summary>
    TiltSmc,
    /// <summary>Importance sampling from the fitted tilt: paths under q_θ weighted once by their path ratio and e^{r(x0)/λ}.</summary>
    TiltImportance,
    /// <summary>Baseline: Feynman–Kac steering with the base proposal (twisted SMC, θ = 0).</summary>
    FeynmanKac,
    /// <summary>Baseline: importance resampling from p (weights e^{r(x0)/λ}).</summary>
    ImportanceResampling,
    /// <summary>Baseline: for each sample, the best of N base draws (not a sampler of π; no weights).</summary>
    BestOfN,
}

/// <summary>How the proposal tilt θ is fitted to r/λ (DESIGN §8).</summary>
public sealed record TiltFitSettings
{
    /// <summary>Principal directions of base samples used as features z = Ax (when <see cref="Directions"/> is null).</summary>
    public int Features { get; init; } = 16;

    /// <summary>The user's feature directions A, k rows of one sample's values each; null uses principal directions.</summary>
    public float[]? Directions { get; init; }

    /// <summary>Regressions of r/λ on z: the first on base samples, each next one on samples of the last fitted tilt.</summary>
    public int PilotRounds { get; init; } = 3;

    /// <summary>Samples per pilot round.</summary>
    public int PilotSamples { get; init; } = 128;

    /// <summary>Trust region: a round changes ⟨θ, x⟩ by at most this standard deviation under the samples it was fitted on.</summary>
    public double TrustRegion { get; init; } = 3.0;

    /// <summary>Ridge on Cov(z), relative to its mean eigenvalue.</summary>
    public double Ridge { get; init; } = 1e-4;

    /// <summary>
    /// Scales s of the fitted θ tried as the proposal s·θ (0: the base law itself, i.e. Feynman–Kac steering): each by a
    /// small importance-sampling run with the exact path weights, the one with the largest ESS per network evaluation
    /// wins. A linear fit of a saturating reward (a log-probability) over-tilts confident samples, and the trained
    /// network's tilted path departs from p's: both show in these weights, not in the regression's R² (measured).
    /// </summary>
    public IReadOnlyList<double> Scales { get; init; } = [1, 0.5, 0.25, 0.1, 0];

    /// <summary>Particles of each scale's trial.</summary>
    public int ScaleTrialParticles { get; init; } = 64;

    /// <summary>
    /// What <see cref="BlackBoxAlignment.FitTilt"/> costs with <paramref name="sampler"/>, at most (a pilot round with
    /// too few finite rewards ends the fit early): the pilot rounds' runs and, for a stochastic sampler, the scale
    /// trials (two network evaluations per particle and step, one for the scale 0: the base law alone).
    /// </summary>
    public long NetworkEvaluations(Sampler sampler)
    {
        long pilot = (long)PilotRounds * PilotSamples * sampler.Steps;
        if (!sampler.IsStochastic) return pilot;
        return pilot + Scales.Distinct().Sum(s => (s == 0 ? 1L : 2L) * ScaleTrialParticles * sampler.Steps);
    }

    /// <summary>Checks the values.</summary>
    public TiltFitSettings Validated()
    {
        if (Directions is null && Features < 1) throw new ArgumentOutOfRangeException(nameof(Features), Features, "expected ≥ 1");
        if (PilotRounds < 1) throw new ArgumentOutOfRangeException(nameof(PilotRounds), PilotRounds, "expected ≥ 1");
        if (PilotSamples < 8) throw new ArgumentOutOfRangeException(nameof(PilotSamples), PilotSamples, "expected ≥ 8");
        if (!(TrustRegion > 0) || double.IsInfinity(TrustRegion)) throw new ArgumentOutOfRangeException(nameof(TrustRegion), TrustRegion, "expected a finite value > 0");
        if (!(Ridge >= 0) || double.IsInfinity(Ridge)) throw new ArgumentOutOfRangeException(nameof(Ridge), Ridge, "expected a finite value ≥ 0");
        if (Scales.Count == 0 || Scales.Any(v => !(v is >= 0 and <= 1))) throw new ArgumentOutOfRangeException(nameof(Scales), "expected scales in [0, 1]");
        if (ScaleTrialParticles < 2) throw new ArgumentOutOfRangeException(nameof(ScaleTrialParticles), ScaleTrialParticles, "expected ≥ 2");
        return this;
    }
}

/// <summary>The options of the black-box methods (those of <c>generate --reward onnx:…</c>).</summary>
public sealed record BlackBoxSettings
{
    /// <summary>The method.</summary>
    public BlackBoxMethod Method { get; init; } = BlackBoxMethod.TiltSmc;

    /// <summary>How θ is fitted (tilt-SMC, tilt-IS).</summary>
    public TiltFitSettings Fit { get; init; } = new();

    /// <summary>Best-of-N's N.</summary>
    public int BestOf { get; init; } = 16;

    /// <summary>
    /// The proposal's fit made before (a plan's global set-up, DESIGN §10: θ, the scale trial's choice and the fit's
    /// report), used instead of fitting, so that every shard moves its particles under the same tilt; null fits here (or
    /// reads the checkpoint's fit).
    /// </summary>
    public TiltFit? Fitted { get; init; }

    /// <summary>Checks the values.</summary>
    public BlackBoxSettings Validated()
    {
        Fit.Validated();
        if (BestOf < 1) throw new ArgumentOutOfRangeException(nameof(BestOf), BestOf, "expected ≥ 1");
        return this;
    }
}

/// <summary>One regression of r/λ on the features.</summary>
/// <param name="Samples">Finite pilot samples it was fitted on.</param>
/// <param name="ThetaNorm">‖θ‖ after the round.</param>
/// <param name="RSquared">Variance of r/λ the features explain on these samples.</param>
/// <param name="ResidualStd">sd of r/λ − ⟨θ, x⟩ on these samples at the round's least-squares θ (the log-weights' spread if it were the proposal).</param>
/// <param name="Step">sd of the change of ⟨θ, x⟩ the round made.</param>
/// <param name="Clipped">The trust region shortened the step.</param>
public sealed record PilotRound(int Samples, double ThetaNorm, double RSquared, double ResidualStd, double Step, bool Clipped);

/// <summary>A fitted proposal tilt θ = Aᵀu.</summary>
/// <param name="Theta">θ, one sample's values.</param>
/// <param name="Coefficients">u, one per feature.</param>
/// <param name="FeatureCount">k.</param>
/// <param name="Features"><c>principal</c> (of base samples) or <c>user</c>.</param>
/// <param name="Rounds">The pilot rounds.</param>
/// <param name="NetworkEvaluations">Network evaluations of the pilot samples.</param>
/// <param name="RewardEvaluations">Reward evaluations of the pilot samples.</param>
/// <param name="Scale">The scale s of the fitted tilt the proposal uses (θ is already scaled; 0: the base law).</param>
/// <param name="ScaleTrials">Each scale tried and the ESS (of its trial's particles) its exact weights gave.</param>
public sealed record TiltFit(float[] Theta, double[] Coefficients, int FeatureCount, string Features, IReadOnlyList<PilotRound> Rounds,
                             long NetworkEvaluations, long RewardEvaluations, double Scale = 1, IReadOnlyList<(double Scale, double Ess)>? ScaleTrials = null)
{
    /// <summary>The fit as JSON (a checkpoint's note, report.json).</summary>
    public JsonObject ToJson(bool withTheta) => new()
    {
        ["features"] = Features, ["feature_count"] = FeatureCount,
        ["coefficients"] = new JsonArray(Coefficients.Select(c => (JsonNode)c).ToArray()),
        ["theta_norm"] = Math.Sqrt(TensorPrimitives.Dot(Theta, Theta)),
        ["rounds"] = new JsonArray(Rounds.Select(r => (JsonNode)new JsonObject
        {
            ["samples"] = r.Samples, ["theta_norm"] = r.ThetaNorm, ["r_squared"] = r.RSquared, ["residual_std"] = r.ResidualStd,
            ["step_std"] = r.Step, ["trust_region_clipped"] = r.Clipped,
        }).ToArray()),
        ["network_evaluations"] = NetworkEvaluations, ["reward_evaluations"] = RewardEvaluations,
        ["scale"] = Scale,
        ["scale_trials"] = new JsonArray((ScaleTrials ?? []).Select(t => (JsonNode)new JsonObject { ["scale"] = t.Scale, ["effective_sample_size"] = t.Ess }).ToArray()),
        ["theta"] = withTheta ? new JsonArray(Theta.Select(v => (JsonNode)v).ToArray()) : null,
    };

    /// <summary>Reads <see cref="ToJson"/>'s output (with θ).</summary>
    /// <exception cref="FormatException">A damaged note.</exception>
    public static TiltFit FromJson(JsonObject json)
    {
        try
        {
            var rounds = json["rounds"]!.AsArray().Select(r => new PilotRound(r!["samples"]!.GetValue<int>(), r["theta_norm"]!.GetValue<double>(),
                r["r_squared"]!.GetValue<double>(), r["residual_std"]!.GetValue<double>(), r["step_std"]!.GetValue<double>(), r["trust_region_clipped"]!.GetValue<bool>())).ToArray();
            return new TiltFit(json["theta"]!.AsArray().Select(v => v!.GetValue<float>()).ToArray(), json["coefficients"]!.AsArray().Select(v => v!.GetValue<double>()).ToArray(),
                json["feature_count"]!.GetValue<int>(), json["features"]!.GetValue<string>(), rounds, json["network_evaluations"]!.GetValue<long>(), json["reward_evaluations"]!.GetValue<long>(),
                json["scale"]?.GetValue<double>() ?? 1,
                json["scale_trials"]?.AsArray().Select(t => (t!["scale"]!.GetValue<double>(), t["effective_sample_size"]!.GetValue<double>())).ToArray());
        }
        catch (Exception e) when (e is InvalidOperationException or NullReferenceException)
        {
            throw new FormatException("not a tilt fit", e);
        }
    }
}

/// <summary>What a black-box run did besides its samples.</summary>
/// <param name="Method">The method.</param>
/// <param name="Fit">The fitted proposal tilt (tilt-SMC and tilt-IS on stochastic samplers); null otherwise.</param>
/// <param name="RewardEvaluations">Reward evaluations of the sampling (pilot ones are the fit's).</param>
/// <param name="Lambda">λ.</param>
public sealed record BlackBoxRun(BlackBoxMethod Method, TiltFit? Fit, long RewardEvaluations, double Lambda);

/// <summary>
/// π ∝ p·e^{r/λ} for a reward without structure — a network (<see cref="OnnxReward"/>) or any <see cref="Reward"/> —
/// by DESIGN §8: every linear tilt shares p with π, so a tilt fitted to r/λ is a proposal whose weights need no
/// density; twisted SMC with the exact path ratio of the stochastic sampler's Gaussian steps makes it consistent on any
/// network (the plain weights e^{r/λ − ⟨θ,x⟩} would assume the trained network samples the tilt exactly, which it does
/// not: DESIGN §1d). <see cref="KlAlignment.Run"/> picks this for rewards whose <see cref="Reward.IsBlackBox"/> is true.
/// </summary>
public static class BlackBoxAlignment
{
    /// <summary>The fit's note in a checkpoint: a resumed run repeats no pilot round and uses the same θ.</summary>
    public const string FitNote = "tilt-fit.json";

    /// <summary>Seed offset of the pilot rounds (their noise never overlaps the run's).</summary>
    private const long PilotSeed = 5_000_011;

    /// <summary>
    /// Fits θ = Aᵀu by regressing r/λ on z = Ax under the current proposal, u = Cov(z)⁻¹·Cov(z, r/λ) (DESIGN §8): the
    /// first round on base samples (whose principal directions are A unless the settings give A), each next one on samples of
    /// the last tilt, each step held inside the trust region. For r linear in span(A), the first round returns θ = a/λ exactly.
    /// </summary>
    /// <param name="network">The model's denoiser (the range is applied here).</param>
    /// <param name="range">The data range, or null.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="reward">The reward.</param>
    /// <param name="lambda">λ &gt; 0.</param>
    /// <param name="settings">Features, rounds, samples, trust region.</param>
    /// <param name="request">Batch, seed and cancellation of the pilot runs.</param>
    public static TiltFit FitTilt(IDenoiser network, DataRange? range, Sampler sampler, Reward reward, double lambda, TiltFitSettings settings, GenerationRequest request)
    {
        settings.Validated();
        int d = network.SampleSize;
        if (settings.Directions is { } given && (given.Length == 0 || given.Length % d != 0))
            throw ConfigException.For("directions", $": {given.Length} values are not k rows of {d}");
        var pilot = request.SideRun(settings.PilotSamples) with { Seed = request.Seed + PilotSeed, OnNonFinite = NonFinitePolicy.Skip };
        long evaluations = 0, rewardEvaluations = 0;
        var theta = new float[d];
        float[]? directions = settings.Directions;
        int k = 0;
        double[] u = [];
        var rounds = new List<PilotRound>();
        for (int round = 0; round < settings.PilotRounds; round++)
        {
            var proposal = round == 0 ? ExactTilt.BaseLaw(network, range) : ExactTilt.FastTilt(network, theta, range);
            var run = Generation.Run(proposal, sampler, pilot with { Seed = pilot.Seed + round * 100_003L });
            evaluations += run.NetworkEvaluations;
            var rewards = reward.EvaluateBatch(run.Samples);
            rewardEvaluations += run.Count;
            var keep = Enumerable.Range(0, run.Count).Where(i => double.IsFinite(rewards[i])).ToArray();
            if (keep.Length < 4) break;   // nothing to fit on: keep the last θ (the law never depends on it)
            var samples = new float[keep.Length * d];
            for (int j = 0; j < keep.Length; j++) run.Samples.AsSpan(keep[j] * d, d).CopyTo(samples.AsSpan(j * d, d));
            var y = keep.Select(i => rewards[i] / lambda).ToArray();
            if (directions is null)
            {
                directions = PrincipalDirections(samples, keep.Length, d, Math.Min(settings.Features, keep.Length - 1));
                u = new double[directions.Length / d];
            }
            k = directions.Length / d;
            if (u.Length != k) u = new double[k];
            var z = Project(samples, keep.Length, directions, k);
            var (fitted, rSquared, residual) = Regress(z, y, k, settings.Ridge);
            // Trust region in the metric of the samples: sd of the change of ⟨θ, x⟩ = √(Δᵀ Cov(z) Δ).
            var delta = fitted.Zip(u, (a, b) => a - b).ToArray();
            double step = Math.Sqrt(Quadratic(Covariance(z, k), delta));
            bool clipped = step > settings.TrustRegion;
            double scale = clipped ? settings.TrustRegion / step : 1;
            for (int j = 0; j < k; j++) u[j] += scale * delta[j];
            theta = Transpose(directions, u, d);
            rounds.Add(new PilotRound(keep.Length, Math.Sqrt(TensorPrimitives.Dot(theta, theta)), rSquared, residual, step * scale, clipped));
        }
        var result = new TiltFit(theta, u, k, settings.Directions is null ? "principal" : "user", rounds, evaluations, rewardEvaluations);
        return sampler.IsStochastic ? ChooseScale(network, range, sampler, reward, lambda, settings, request, result) : result;
    }

    /// <summary>
    /// The proposal scale: s·θ for each s of the settings, one importance-sampling system of exact path weights each
    /// (DESIGN §8's weights with the trained network's path ratio), the largest ESS per network evaluation wins.
    /// </summary>
    private static TiltFit ChooseScale(IDenoiser network, DataRange? range, Sampler sampler, Reward reward, double lambda, TiltFitSettings settings,
                                       GenerationRequest request, TiltFit fitted)
    {
        var baseLaw = ExactTilt.BaseLaw(network, range);
        var smc = new SmcSettings { ParticlesPerSystem = settings.ScaleTrialParticles, Seed = request.Seed + PilotSeed + 7_000_001, Resampling = false, OnNonFinite = NonFinitePolicy.Skip };
        long evaluations = fitted.NetworkEvaluations, rewardEvaluations = fitted.RewardEvaluations;
        var trials = new List<(double Scale, double Ess)>();
        double best = -1, bestScale = 0;
        foreach (double scale in settings.Scales.Distinct())
        {
            request.Cancellation.ThrowIfCancellationRequested();
            var proposal = scale == 0 ? baseLaw : ExactTilt.FastTilt(network, fitted.Theta.Select(v => (float)(v * scale)).ToArray(), range);
            SmcSystem system;
            try { system = new TwistedSmc(baseLaw, proposal, sampler, Potentials.Reward(reward, lambda), smc).RunSystem(0, request.Cancellation); }
            catch (NonFiniteException) { trials.Add((scale, 0)); continue; }
            evaluations += system.NetworkEvaluations;
            rewardEvaluations += settings.ScaleTrialParticles;
            double ess = system.LogWeights.All(double.IsNegativeInfinity) ? 0 : WeightedSamples.EffectiveSampleSize(WeightedSamples.Normalize(system.LogWeights));
            trials.Add((scale, ess));
            double perEvaluation = ess / system.NetworkEvaluations;
            if (perEvaluation > best) (best, bestScale) = (perEvaluation, scale);
        }
        return fitted with
        {
            Theta = fitted.Theta.Select(v => (float)(v * bestScale)).ToArray(), Scale = bestScale, ScaleTrials = trials,
            NetworkEvaluations = evaluations, RewardEvaluations = rewardEvaluations,
        };
    }

    /// <summary>
    /// Samples π ∝ p·e^{r/λ} by <paramref name="settings"/>' method. Count, batch, seed, NaN policy and cancellation are
    /// the request's; the exact settings set the SMC's budget. The result's <see cref="KlAlignmentResult.Exact"/> holds the
    /// weighted particles, log Z_π = log E_p[e^{r/λ}] and KL(π‖p) from the run's own weights (null for best-of-N).
    /// </summary>
    /// <param name="network">The model's denoiser (the range is applied here).</param>
    /// <param name="range">The data range, or null.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="reward">The reward.</param>
    /// <param name="lambda">λ &gt; 0.</param>
    /// <param name="settings">Method, fit (or a fit made before) and best-of-N's N.</param>
    /// <param name="exact">The SMC's budget, a fixed number of systems or a block of them (a shard's).</param>
    /// <param name="request">Count, batch, seed, NaN policy and cancellation.</param>
    /// <param name="progress">Effective samples of the target (a block: its systems).</param>
    /// <param name="checkpoint">Where the fit and finished systems are kept for a resume; null for none.</param>
    /// <param name="systems">Finished systems to take instead of running them (a merge of shards); null for none.</param>
    /// <exception cref="ConfigException">A method that needs a stochastic sampler with a deterministic one (parameter <c>sampler</c>).</exception>
    public static KlAlignmentResult Run(IDenoiser network, DataRange? range, Sampler sampler, Reward reward, double lambda, BlackBoxSettings settings,
                                        ExactTiltSettings exact, GenerationRequest request, IProgress<GenerationProgress>? progress = null,
                                        BatchCheckpoint? checkpoint = null, ISmcSystemStore? systems = null)
    {
        settings.Validated();
        using var cancellation = NetworkCancellation.Enter(request.Cancellation);
        var method = settings.Method;
        CheckSampler(method, sampler);
        long rewardEvaluations = 0;
        BatchPotential potential = (samples, values) =>
        {
            Interlocked.Add(ref rewardEvaluations, values.Length);
            Potentials.Reward(reward, lambda)(samples, values);
        };
        if (method == BlackBoxMethod.BestOfN)
        {
            var best = Baselines.BestOfN(ExactTilt.BaseLaw(network, range), sampler, reward, settings.BestOf, request.Count, request.Seed, request.BatchSize);
            var samples = new GenerationResult(best.Samples, 0, best.Count, best.NetworkEvaluations, TimeSpan.Zero, TimeSpan.Zero);
            return new KlAlignmentResult(KlAlgorithm.BlackBox, samples, []) { BlackBox = new BlackBoxRun(method, null, (long)settings.BestOf * request.Count, lambda) };
        }

        TiltFit? fit = null;
        if (method is BlackBoxMethod.TiltSmc or BlackBoxMethod.TiltImportance && sampler.IsStochastic)
        {
            if (settings.Fitted is { } planned)
            {
                if (planned.Theta.Length != network.SampleSize)
                    throw new ArgumentException($"the fitted θ has {planned.Theta.Length} values, the model's samples have {network.SampleSize}", nameof(settings));
                fit = planned;
            }
            else if (checkpoint?.ReadNote(FitNote) is { } saved)
            {
                try { fit = TiltFit.FromJson(JsonNode.Parse(saved)!.AsObject()); }
                catch (Exception e) when (e is FormatException or System.Text.Json.JsonException)
                {
                    throw ConfigException.For("resume", $": {Path.Combine(BatchCheckpoint.Folder, FitNote)} in the output folder is damaged ({e.Message}); start over with {OnnxAlignException.Option("overwrite")}", e);
                }
            }
            else
            {
                fit = FitTilt(network, range, sampler, reward, lambda, settings.Fit, request);
                checkpoint?.WriteNote(FitNote, fit.ToJson(withTheta: true).ToJsonString());
            }
        }
        var theta = fit?.Theta ?? new float[network.SampleSize];
        var exactSettings = exact with
        {
            Smc = exact.Smc with { Resampling = method is BlackBoxMethod.TiltSmc or BlackBoxMethod.FeynmanKac },
        };
        var (result, block, drawn) = KlAlignment.Smc(network, range, sampler, potential, theta, exactSettings, request, progress, KlAlignment.Store(checkpoint, systems));
        return new KlAlignmentResult(KlAlgorithm.BlackBox, drawn, theta)
        {
            Exact = result, Block = block, BlackBox = new BlackBoxRun(method, fit, rewardEvaluations, lambda),
            // A fit made before (a plan's) cost this run nothing.
            SetupEvaluations = settings.Fitted is null ? fit?.NetworkEvaluations ?? 0 : 0,
        };
    }

    /// <summary>Checks that <paramref name="method"/> can run with <paramref name="sampler"/> (before any work is done).</summary>
    /// <exception cref="ConfigException">A method that weighs stochastic steps with a deterministic sampler (parameter <c>sampler</c>).</exception>
    public static void CheckSampler(BlackBoxMethod method, Sampler sampler)
    {
        if (!sampler.IsStochastic && method is BlackBoxMethod.TiltImportance or BlackBoxMethod.FeynmanKac or BlackBoxMethod.ImportanceResampling)
            throw ConfigException.For("sampler", $"{sampler.Name} is deterministic: {Name(method)} weighs the sampler's stochastic steps; use ddpm, euler-maruyama or ddim with η > 0, or the default tilt-smc (noise-space SMC for deterministic samplers)");
    }

    /// <summary>The method's name on the command line and in reports.</summary>
    public static string Name(BlackBoxMethod method) => method switch
    {
        BlackBoxMethod.TiltSmc => "tilt-smc",
        BlackBoxMethod.TiltImportance => "tilt-is",
        BlackBoxMethod.FeynmanKac => "fk-steering",
        BlackBoxMethod.ImportanceResampling => "sir",
        _ => "best-of-n",
    };

    /// <summary>The method a name stands for (<see cref="Name"/>), or null.</summary>
    public static BlackBoxMethod? Parse(string name) => Enum.GetValues<BlackBoxMethod>().Cast<BlackBoxMethod?>().FirstOrDefault(m => Name(m!.Value) == name);

    /// <summary>
    /// The top-k principal directions of n samples (the leading right singular vectors of the centred data X, unit
    /// rows, k × d row after row; each signed so that its largest component is positive). They are the eigenvectors of
    /// the smaller of the two Gram matrices: for n &lt; d, XXᵀ = U S² Uᵀ (n × n) and v_r = Xᵀu_r / ‖Xᵀu_r‖, so the cost
    /// is O(n²d + n³) and the memory O(n² + kd) — a latent of 4·64·64 values would need a 2 GB Vᵀ from a full SVD.
    /// </summary>
    public static float[] PrincipalDirections(ReadOnlySpan<float> samples, int n, int d, int k)
    {
        if (k < 1 || k > Math.Min(n, d)) throw new ArgumentOutOfRangeException(nameof(k), k, $"expected 1..{Math.Min(n, d)}");
        if (samples.Length != (long)n * d) throw new ArgumentException($"expected {n} × {d} values, got {samples.Length}", nameof(samples));
        var rows = new double[k * d];
        if (n < d)
        {
            var means = Numerics.ColumnMeans(samples, d);
            var centred = new double[(long)n * d];
            for (int i = 0; i < n; i++) for (int j = 0; j < d; j++) centred[(long)i * d + j] = samples[i * d + j] - means[j];
            var gram = new double[n * n];
            for (int a = 0; a < n; a++)
                for (int b = 0; b <= a; b++)
                    gram[a * n + b] = gram[b * n + a] = TensorPrimitives.Dot(centred.AsSpan(a * d, d), centred.AsSpan(b * d, d));
            var (_, u) = Numerics.SymmetricEigen(gram, n);   // ascending eigenvalues; column j of u belongs to value j
            for (int r = 0; r < k; r++)
            {
                var row = rows.AsSpan(r * d, d);
                for (int i = 0; i < n; i++) TensorPrimitives.MultiplyAdd(centred.AsSpan(i * d, d), u[i * n + n - 1 - r], row, row);
            }
        }
        else
        {
            var scatter = new double[d * d];   // XᵀX of the centred data, unscaled (ColumnCovariance divides by n − 1: 0 for one sample)
            Numerics.AddCenteredProducts(samples, d, Numerics.ColumnMeans(samples, d), scatter);
            var (_, v) = Numerics.SymmetricEigen(scatter, d);
            for (int r = 0; r < k; r++) for (int j = 0; j < d; j++) rows[r * d + j] = v[j * d + d - 1 - r];
        }
        // Orthonormal rows (Gram–Schmidt against the earlier ones: directions of a zero singular value are arbitrary,
        // and a rank-deficient batch leaves a zero row, which the ridge of the regression absorbs), with a fixed sign.
        for (int r = 0; r < k; r++)
        {
            var row = rows.AsSpan(r * d, d);
            for (int q = 0; q < r; q++)
            {
                var earlier = rows.AsSpan(q * d, d);
                TensorPrimitives.MultiplyAdd(earlier, -TensorPrimitives.Dot(row, earlier), row, row);
            }
            double norm = TensorPrimitives.Norm(row);
            if (norm > 1e-12) TensorPrimitives.Divide(row, norm, row); else row.Clear();
            int largest = 0;   // a plain loop: the sign must not depend on how a vectorised search breaks ties
            for (int j = 1; j < d; j++) if (Math.Abs(row[j]) > Math.Abs(row[largest])) largest = j;
            if (row[largest] < 0) TensorPrimitives.Negate(row, row);
        }
        return rows.Select(v => (float)v).ToArray();
    }

    /// <summary>z = A x for each of n samples (n × k, row after row).</summary>
    internal static double[] Project(ReadOnlySpan<float> samples, int n, ReadOnlySpan<float> directions, int k)
    {
        int d = directions.Length / k;
        var z = new double[n * k];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < k; j++) z[i * k + j] = TensorPrimitives.Dot(samples.Slice(i * d, d), directions.Slice(j * d, d));
        return z;
    }

    /// <summary>θ = Aᵀu.</summary>
    internal static float[] Transpose(ReadOnlySpan<float> directions, IReadOnlyList<double> u, int d)
    {
        var theta = new float[d];
        for (int j = 0; j < u.Count; j++) TensorPrimitives.MultiplyAdd(directions.Slice(j * d, d), (float)u[j], theta, theta);
        return theta;
    }

    /// <summary>Least squares y ≈ c + zᵀu with a ridge on Cov(z): u, R² and the residual sd.</summary>
    internal static (double[] U, double RSquared, double ResidualStd) Regress(double[] z, double[] y, int k, double ridge)
    {
        int n = y.Length;
        var cov = Covariance(z, k);
        double meanY = y.Average();
        var zMeans = Means(z, k);
        var cross = Vector<double>.Build.Dense(k);
        for (int i = 0; i < n; i++) for (int j = 0; j < k; j++) cross[j] += (z[i * k + j] - zMeans[j]) * (y[i] - meanY) / (n - 1);
        double shrink = ridge * cov.Trace() / k;
        var u = (cov + Matrix<double>.Build.DenseIdentity(k) * Math.Max(shrink, 1e-300)).Solve(cross).ToArray();
        double varY = y.Sum(v => (v - meanY) * (v - meanY)) / (n - 1);
        var residuals = new double[n];
        for (int i = 0; i < n; i++)
        {
            double fit = meanY;
            for (int j = 0; j < k; j++) fit += (z[i * k + j] - zMeans[j]) * u[j];
            residuals[i] = y[i] - fit;
        }
        double varResidual = residuals.Sum(r => r * r) / Math.Max(n - 1, 1);
        return (u, varY > 0 ? 1 - varResidual / varY : 1, Math.Sqrt(varResidual));
    }

    private static double[] Means(double[] z, int k)
    {
        int n = z.Length / k;
        var means = new double[k];
        for (int i = 0; i < n; i++) for (int j = 0; j < k; j++) means[j] += z[i * k + j] / n;
        return means;
    }

    private static Matrix<double> Covariance(double[] z, int k)
    {
        int n = z.Length / k;
        var means = Means(z, k);
        var cov = Matrix<double>.Build.Dense(k, k);
        for (int i = 0; i < n; i++)
            for (int a = 0; a < k; a++)
                for (int b = 0; b < k; b++) cov[a, b] += (z[i * k + a] - means[a]) * (z[i * k + b] - means[b]) / (n - 1);
        return cov;
    }

    private static double Quadratic(Matrix<double> m, double[] v)
    {
        double sum = 0;
        for (int a = 0; a < v.Length; a++) for (int b = 0; b < v.Length; b++) sum += v[a] * m[a, b] * v[b];
        return Math.Max(sum, 0);
    }
}
