using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Core;

namespace OnnxAlign.Model;

/// <summary>How β_t is laid out over the training timesteps (diffusers' <c>beta_schedule</c>).</summary>
public enum BetaSchedule
{
    /// <summary><c>linear</c>: β evenly spaced from beta_start to beta_end.</summary>
    Linear,
    /// <summary><c>scaled_linear</c>: √β evenly spaced (latent diffusion).</summary>
    ScaledLinear,
    /// <summary><c>squaredcos_cap_v2</c>: the cosine schedule of Nichol &amp; Dhariwal, β capped at 0.999.</summary>
    SquaredCosCapV2,
}

/// <summary>What the network outputs (diffusers' <c>prediction_type</c>, DESIGN §0).</summary>
public enum PredictionType
{
    /// <summary>The noise ε.</summary>
    Epsilon,
    /// <summary>The velocity v = α·ε − σ·x0.</summary>
    VPrediction,
    /// <summary>The clean sample x0.</summary>
    Sample,
}

/// <summary>How inference timesteps are picked from the training grid (diffusers' <c>timestep_spacing</c>).</summary>
public enum TimestepSpacing
{
    /// <summary>Multiples of ⌊N/n⌋ from 0, plus <c>steps_offset</c>.</summary>
    Leading,
    /// <summary>Counted down from N − 1.</summary>
    Trailing,
    /// <summary>Rounded linspace over [0, N − 1].</summary>
    Linspace,
}

/// <summary>Variance of the DDPM ancestral step (diffusers' <c>variance_type</c>).</summary>
public enum VarianceType
{
    /// <summary>Posterior variance β̃_t (the default).</summary>
    FixedSmall,
    /// <summary>Posterior variance, applied through its logarithm (same value).</summary>
    FixedSmallLog,
    /// <summary>β_t.</summary>
    FixedLarge,
    /// <summary>β_t, applied through its logarithm (same value).</summary>
    FixedLargeLog,
}

/// <summary>
/// A diffusers <c>scheduler_config.json</c>, resolved against the defaults of a scheduler class (DESIGN §7).
/// Keys the file does not set take the defaults diffusers uses for <see cref="ClassName"/>; keys the project does
/// not know are ignored (as diffusers ignores them) and listed in <see cref="IgnoredKeys"/>; a known key with a
/// value that cannot be honoured is a <see cref="ConfigException"/>.
/// </summary>
public sealed record SchedulerConfig
{
    /// <summary>The diffusers scheduler class whose defaults fill unset keys.</summary>
    public string ClassName { get; init; } = DdpmClass;
    /// <summary><c>num_train_timesteps</c> (legacy key <c>timesteps</c>).</summary>
    public int NumTrainTimesteps { get; init; } = 1000;
    /// <summary><c>beta_start</c>.</summary>
    public double BetaStart { get; init; } = 0.0001;
    /// <summary><c>beta_end</c>.</summary>
    public double BetaEnd { get; init; } = 0.02;
    /// <summary><c>beta_schedule</c>.</summary>
    public BetaSchedule BetaSchedule { get; init; } = BetaSchedule.Linear;
    /// <summary><c>trained_betas</c>: explicit β per training timestep; overrides the schedule when set.</summary>
    public IReadOnlyList<double>? TrainedBetas { get; init; }
    /// <summary><c>prediction_type</c>.</summary>
    public PredictionType PredictionType { get; init; } = PredictionType.Epsilon;
    /// <summary><c>timestep_spacing</c>.</summary>
    public TimestepSpacing TimestepSpacing { get; init; } = TimestepSpacing.Leading;
    /// <summary><c>steps_offset</c>.</summary>
    public int StepsOffset { get; init; }
    /// <summary><c>set_alpha_to_one</c>: DDIM's ᾱ after the last step is 1 (else ᾱ_0).</summary>
    public bool SetAlphaToOne { get; init; } = true;
    /// <summary><c>clip_sample</c>: clip the predicted x0 to ±<see cref="ClipSampleRange"/>.</summary>
    public bool ClipSample { get; init; } = true;
    /// <summary><c>clip_sample_range</c>.</summary>
    public double ClipSampleRange { get; init; } = 1.0;
    /// <summary><c>variance_type</c> (DDPM).</summary>
    public VarianceType VarianceType { get; init; } = VarianceType.FixedSmall;
    /// <summary><c>solver_type</c> of DPM-Solver++: <c>midpoint</c> or <c>heun</c>.</summary>
    public string SolverType { get; init; } = "midpoint";
    /// <summary><c>lower_order_final</c> (DPM-Solver++).</summary>
    public bool LowerOrderFinal { get; init; } = true;
    /// <summary><c>euler_at_final</c> (DPM-Solver++).</summary>
    public bool EulerAtFinal { get; init; }
    /// <summary><c>final_sigmas_type</c> (DPM-Solver++): <c>zero</c> or <c>sigma_min</c>.</summary>
    public string FinalSigmasType { get; init; } = "zero";
    /// <summary>Keys present in the file that the project does not read (ignored, as diffusers does).</summary>
    public IReadOnlyList<string> IgnoredKeys { get; init; } = [];
    /// <summary>The JSON the config came from, kept so it can be re-resolved against another class's defaults.</summary>
    public string SourceJson { get; init; } = "{}";

    internal const string DdpmClass = "DDPMScheduler";
    internal const string DdimClass = "DDIMScheduler";
    internal const string DpmSolverClass = "DPMSolverMultistepScheduler";

    /// <summary>The largest num_train_timesteps accepted (diffusers' models use 1000; the schedule is held in memory).</summary>
    public const int MaxTrainTimesteps = 100_000;

    // Scheduler classes whose defaults the project knows; a config naming another class is refused, not sampled as DDIM.
    private static readonly string[] KnownClasses =
    [
        DdpmClass, DdimClass, "PNDMScheduler", DpmSolverClass, "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler",
        "DEISMultistepScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler",
    ];

    // Keys this project reads. Everything else is ignored (and listed).
    private static readonly HashSet<string> KnownKeys =
    [
        "_class_name", "num_train_timesteps", "timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
        "prediction_type", "timestep_spacing", "steps_offset", "set_alpha_to_one", "clip_sample", "clip_sample_range",
        "variance_type", "thresholding", "rescale_betas_zero_snr", "use_karras_sigmas", "use_lu_lambdas",
        "use_exponential_sigmas", "use_beta_sigmas", "algorithm_type", "solver_type", "solver_order",
        "lower_order_final", "euler_at_final", "final_sigmas_type", "lambda_min_clipped",
    ];

    /// <summary>Reads and resolves a <c>scheduler_config.json</c> file.</summary>
    /// <exception cref="ConfigException">The file is missing, not JSON, or sets a value that cannot be honoured.</exception>
    public static SchedulerConfig Load(string path, string? defaultsFor = null)
    {
        string json;
        try { json = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"{path}: cannot read scheduler config ({e.Message})");
        }
        return Parse(json, path, defaultsFor);
    }

    /// <summary>Parses a scheduler config. <paramref name="defaultsFor"/> overrides the class whose defaults apply
    /// to unset keys (a sampler of another family reads the same file, as diffusers' <c>from_config</c> does).</summary>
    public static SchedulerConfig Parse(string json, string sourceName, string? defaultsFor = null)
    {
        JsonObject obj;
        try
        {
            obj = JsonNode.Parse(json, documentOptions: new JsonDocumentOptions { AllowTrailingCommas = true }) as JsonObject
                  ?? throw new ConfigException($"{sourceName}: expected a JSON object");
            _ = obj.Count; // materialises the properties, so a duplicate key is reported here
        }
        catch (JsonException e)
        {
            throw new ConfigException($"{sourceName}: not valid JSON ({e.Message})");
        }
        catch (ArgumentException e)
        {
            throw new ConfigException($"{sourceName}: not a valid config ({e.Message})");
        }

        var reader = new KeyReader(obj, sourceName);
        string? named = reader.String("_class_name");
        if (named is not null && !KnownClasses.Contains(named))
            throw new ConfigException($"{sourceName}: _class_name '{named}' is not a scheduler OnnxAlign knows (expected one of: {string.Join(", ", KnownClasses)})");
        string className = defaultsFor ?? named ?? DdpmClass;
        var c = DefaultsFor(className) with { SourceJson = json };

        int? train = reader.Int("num_train_timesteps") ?? reader.Int("timesteps");
        c = c with
        {
            NumTrainTimesteps = train ?? c.NumTrainTimesteps,
            BetaStart = reader.Double("beta_start") ?? c.BetaStart,
            BetaEnd = reader.Double("beta_end") ?? c.BetaEnd,
            BetaSchedule = reader.Enum("beta_schedule", BetaSchedules) ?? c.BetaSchedule,
            TrainedBetas = reader.DoubleArray("trained_betas"),
            PredictionType = reader.Enum("prediction_type", PredictionTypes) ?? c.PredictionType,
            TimestepSpacing = reader.Enum("timestep_spacing", Spacings) ?? c.TimestepSpacing,
            StepsOffset = reader.Int("steps_offset") ?? c.StepsOffset,
            SetAlphaToOne = reader.Bool("set_alpha_to_one") ?? c.SetAlphaToOne,
            ClipSample = reader.Bool("clip_sample") ?? c.ClipSample,
            ClipSampleRange = reader.Double("clip_sample_range") ?? c.ClipSampleRange,
            VarianceType = reader.Enum("variance_type", VarianceTypes) ?? c.VarianceType,
            SolverType = reader.Choice("solver_type", "midpoint", "heun") ?? c.SolverType,
            LowerOrderFinal = reader.Bool("lower_order_final") ?? c.LowerOrderFinal,
            EulerAtFinal = reader.Bool("euler_at_final") ?? c.EulerAtFinal,
            FinalSigmasType = reader.Choice("final_sigmas_type", "zero", "sigma_min") ?? c.FinalSigmasType,
            IgnoredKeys = obj.Select(kv => kv.Key).Where(k => !KnownKeys.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList(),
        };

        // Known keys whose non-default values this project does not implement: refuse rather than sample wrongly.
        reader.RequireFalse("thresholding", "dynamic thresholding is not supported");
        reader.RequireFalse("rescale_betas_zero_snr", "zero-terminal-SNR rescaling is not supported");
        reader.RequireFalse("use_karras_sigmas", "Karras sigmas are not supported");
        reader.RequireFalse("use_lu_lambdas", "Lu lambdas are not supported");
        reader.RequireFalse("use_exponential_sigmas", "exponential sigmas are not supported");
        reader.RequireFalse("use_beta_sigmas", "beta sigmas are not supported");
        string? algorithm = reader.String("algorithm_type");
        if (algorithm is not null && algorithm != "dpmsolver++" && algorithm != "deis")
            throw new ConfigException($"{sourceName}: algorithm_type '{algorithm}' is not supported (expected dpmsolver++)");
        if (reader.Int("solver_order") is { } order && order != 2)
            throw new ConfigException($"{sourceName}: solver_order={order} is not supported (DPM-Solver++ here is the second-order multistep method)");
        double? lambdaMin = reader.Double("lambda_min_clipped");
        if (lambdaMin is { } lm && !double.IsNegativeInfinity(lm))
            throw new ConfigException($"{sourceName}: lambda_min_clipped={lm.ToString(CultureInfo.InvariantCulture)} is not supported (only -inf)");

        if (c.NumTrainTimesteps < 2 || c.NumTrainTimesteps > MaxTrainTimesteps)
            throw new ConfigException($"{sourceName}: num_train_timesteps must lie in [2, {MaxTrainTimesteps}], got {c.NumTrainTimesteps}");
        if (c.TrainedBetas is { } tb && tb.Count != c.NumTrainTimesteps)
            throw new ConfigException($"{sourceName}: trained_betas has {tb.Count} values but num_train_timesteps is {c.NumTrainTimesteps}");
        if (c.TrainedBetas is { } betas)
            for (int t = 0; t < betas.Count; t++)
                if (!(betas[t] > 0 && betas[t] < 1)) throw new ConfigException($"{sourceName}: trained_betas[{t}] is {betas[t]}; every β must lie in (0, 1)");
        if (c.TrainedBetas is null && !(c.BetaStart > 0 && c.BetaEnd > c.BetaStart && c.BetaEnd < 1))
            throw new ConfigException($"{sourceName}: need 0 < beta_start < beta_end < 1, got {c.BetaStart.ToString(CultureInfo.InvariantCulture)}, {c.BetaEnd.ToString(CultureInfo.InvariantCulture)}");
        if (c.StepsOffset < 0 || c.StepsOffset >= c.NumTrainTimesteps)
            throw new ConfigException($"{sourceName}: steps_offset must lie in [0, {c.NumTrainTimesteps - 1}], got {c.StepsOffset}");
        if (!(c.ClipSampleRange > 0))
            throw new ConfigException($"{sourceName}: clip_sample_range must be positive");
        return c;
    }

    /// <summary>The same file resolved against the defaults of another scheduler class.</summary>
    public SchedulerConfig WithDefaultsOf(string className) =>
        className == ClassName ? this : Parse(SourceJson, "scheduler config", className);

    /// <summary>diffusers' constructor defaults for the scheduler classes users' configs name.</summary>
    private static SchedulerConfig DefaultsFor(string className) => className switch
    {
        DdpmClass => new SchedulerConfig { ClassName = className },
        DdimClass => new SchedulerConfig { ClassName = className },
        "PNDMScheduler" => new SchedulerConfig { ClassName = className, ClipSample = false, SetAlphaToOne = false },
        DpmSolverClass or "DPMSolverSinglestepScheduler" or "UniPCMultistepScheduler" or "DEISMultistepScheduler"
            => new SchedulerConfig { ClassName = className, ClipSample = false, TimestepSpacing = TimestepSpacing.Linspace },
        "EulerDiscreteScheduler" or "EulerAncestralDiscreteScheduler" or "LMSDiscreteScheduler" or "HeunDiscreteScheduler"
            => new SchedulerConfig { ClassName = className, ClipSample = false, TimestepSpacing = TimestepSpacing.Linspace },
        _ => new SchedulerConfig { ClassName = className, ClipSample = false },
    };

    private static readonly Dictionary<string, BetaSchedule> BetaSchedules = new()
    {
        ["linear"] = BetaSchedule.Linear, ["scaled_linear"] = BetaSchedule.ScaledLinear, ["squaredcos_cap_v2"] = BetaSchedule.SquaredCosCapV2,
    };
    private static readonly Dictionary<string, PredictionType> PredictionTypes = new()
    {
        ["epsilon"] = PredictionType.Epsilon, ["v_prediction"] = PredictionType.VPrediction, ["sample"] = PredictionType.Sample,
    };
    private static readonly Dictionary<string, TimestepSpacing> Spacings = new()
    {
        ["leading"] = TimestepSpacing.Leading, ["trailing"] = TimestepSpacing.Trailing, ["linspace"] = TimestepSpacing.Linspace,
    };
    private static readonly Dictionary<string, VarianceType> VarianceTypes = new()
    {
        ["fixed_small"] = VarianceType.FixedSmall, ["fixed_small_log"] = VarianceType.FixedSmallLog,
        ["fixed_large"] = VarianceType.FixedLarge, ["fixed_large_log"] = VarianceType.FixedLargeLog,
    };

    /// <summary>Typed reads of optional keys with errors that name the file and the key.</summary>
    private sealed class KeyReader(JsonObject obj, string source)
    {
        private JsonNode? Get(string key) => obj.TryGetPropertyValue(key, out var node) ? node : null;

        private ConfigException Bad(string key, string expected, JsonNode? node) =>
            new($"{source}: key '{key}' expects {expected}, got {node?.ToJsonString() ?? "null"}");

        public string? String(string key)
        {
            var node = Get(key);
            if (node is null) return null;
            return node is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw Bad(key, "a string", node);
        }

        public double? Double(string key)
        {
            var node = Get(key);
            if (node is null) return null;
            if (node is JsonValue v)
            {
                if (v.TryGetValue<double>(out var d)) return d;
                // Python's json writes -Infinity / Infinity / NaN as bare words, which System.Text.Json reads as strings only when
                // quoted; those words are accepted, a quoted number ("0.02") is not: diffusers would not take it as one either.
                if (v.TryGetValue<string>(out var s) && s is "NaN" or "Infinity" or "-Infinity" && double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out d)) return d;
            }
            throw Bad(key, "a number", node);
        }

        public int? Int(string key)
        {
            var d = Double(key);
            if (d is null) return null;
            if (d != Math.Floor(d.Value) || Math.Abs(d.Value) > int.MaxValue) throw Bad(key, "an integer", Get(key));
            return (int)d.Value;
        }

        public bool? Bool(string key)
        {
            var node = Get(key);
            if (node is null) return null;
            return node is JsonValue v && v.TryGetValue<bool>(out var b) ? b : throw Bad(key, "true or false", node);
        }

        public double[]? DoubleArray(string key)
        {
            var node = Get(key);
            if (node is null) return null;
            if (node is not JsonArray a) throw Bad(key, "an array of numbers", node);
            return a.Select(e => e is JsonValue v && v.TryGetValue<double>(out var d) ? d : throw Bad(key, "an array of numbers", node)).ToArray();
        }

        public T? Enum<T>(string key, Dictionary<string, T> values) where T : struct
        {
            var s = Choice(key, values.Keys.ToArray());
            return s is null ? null : values[s];
        }

        public string? Choice(string key, params string[] allowed)
        {
            var s = String(key);
            if (s is null || allowed.Contains(s)) return s;
            throw new ConfigException($"{source}: {key} '{s}' is not supported (expected one of: {string.Join(", ", allowed)})");
        }

        public void RequireFalse(string key, string what)
        {
            if (Bool(key) == true) throw new ConfigException($"{source}: {key}=true: {what}");
        }
    }
}
