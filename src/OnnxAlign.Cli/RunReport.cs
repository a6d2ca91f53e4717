using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Evaluation;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>The <c>report.json</c> every run writes: what ran, on what, how long, and what came out.</summary>
internal static class RunReport
{
    /// <summary>
    /// A generate run's report: the common fields (<see cref="JobReport"/>) and its blocks (config, sampler, the sample
    /// options, shard, statistics, and the toy models' reference moments).
    /// </summary>
    public static JobReport Create(string command, DiffusionModel model, OnnxDenoiser denoiser, Sampler sampler, GenerationRequest request, GenerationResult result)
    {
        var c = sampler.Config;
        var report = new JsonObject
        {
            ["config"] = new JsonObject
            {
                ["class_name"] = model.Config.ClassName,
                ["num_train_timesteps"] = c.NumTrainTimesteps,
                ["beta_schedule"] = c.TrainedBetas is null ? c.BetaSchedule.ToString() : "trained",
                ["beta_start"] = c.BetaStart,
                ["beta_end"] = c.BetaEnd,
                ["prediction_type"] = c.PredictionType.ToString(),
                ["timestep_spacing"] = c.TimestepSpacing.ToString(),
                ["steps_offset"] = c.StepsOffset,
                ["clip_sample"] = c.ClipSample,
                ["ignored_keys"] = new JsonArray(c.IgnoredKeys.Select(k => (JsonNode)k).ToArray()),
            },
            ["sampler"] = SamplerBlock(sampler),
            ["seed"] = request.Seed,
            ["count"] = request.Count,
            ["batch"] = request.BatchSize,
            ["init_noise"] = request.InitialNoise is not null,
            ["shard"] = new JsonObject
            {
                ["index"] = request.Shard.Index,
                ["count"] = request.Shard.Count,
                ["first_sample"] = result.FirstIndex,
                ["samples"] = result.Count,
            },
            ["statistics"] = Statistics(result.Samples, denoiser.SampleSize),
        };
        string mixturePath = Path.Combine(model.Directory, "mixture.json");
        if (File.Exists(mixturePath) && denoiser.SampleSize <= SampleStatistics.MomentDimensionLimit)
        {
            var mixture = GaussianMixture.Load(mixturePath);
            report["reference"] = new JsonObject
            {
                ["source"] = mixturePath,
                ["mean"] = Array(mixture.Mean()),
                ["covariance"] = Array(mixture.Covariance()),
            };
        }
        return new JobReport { Command = command, Model = ReportModel.Of(model, denoiser), NetworkEvaluations = result.NetworkEvaluations, Blocks = report };
    }

    /// <summary>The <c>sampler</c> block: its name, steps, DDIM's η and the timesteps.</summary>
    public static JsonObject SamplerBlock(Sampler sampler) => new()
    {
        ["name"] = sampler.Name,
        ["steps"] = sampler.Steps,
        ["eta"] = sampler is DdimSampler ddim ? ddim.Eta : null,
        ["timesteps"] = Array(sampler.Timesteps.Select(t => (double)t)),
    };

    /// <summary>
    /// The conditioning block (DESIGN §9): where the hidden states came from, the prompts and their tokens, the guidance
    /// scale and what law that makes (never "exact" under guidance); and for a latent model the VAE and the decoded shape.
    /// </summary>
    public static void AddConditioning(JobReport report, Guidance.ConditionedModel opened)
    {
        var law = opened.Law;
        if (law.Source != "none")
        {
            static JsonObject? Prompt(PromptEncoding? p) => p is null ? null : new JsonObject
            {
                ["text"] = p.Prompt,
                ["tokens"] = p.ContentTokens,
                ["truncated_tokens"] = p.TruncatedTokens,
            };
            report.Blocks["conditioning"] = new JsonObject
            {
                ["source"] = law.Source,
                ["prompt"] = Prompt(law.Prompt),
                ["negative_prompt"] = Prompt(law.NegativePrompt),
                ["guidance_scale"] = law.GuidanceScale,
                ["network_rows_per_evaluation"] = law.NetworkCallsPerSample,
                ["model_law"] = law.IsModelLaw,
                ["law"] = law.Law,
                ["text_encoder"] = opened.TextEncoder?.Path,
            };
        }
        if (opened.Decoder is { } decoder)
            report.Blocks["latent"] = new JsonObject
            {
                ["vae_decoder"] = decoder.Path,
                ["scaling_factor"] = decoder.Config.ScalingFactor,
                ["latent_shape"] = Array(opened.Network.SampleShape.Select(d => (double)d)),
                ["image_shape"] = Array(decoder.ImageShape.Select(d => (double)d)),
                ["note"] = "samples.npy and the PNGs are the decoded images, latents.npy the latents; statistics, rewards and alignment are of the latents (x)",
            };
    }

    /// <summary>Reads the model folder's <c>mixture.json</c> when it has one, so that a damaged file is an input error before anything is written.</summary>
    public static void CheckReference(DiffusionModel model)
    {
        string path = Path.Combine(model.Directory, "mixture.json");
        if (File.Exists(path)) GaussianMixture.Load(path);
    }

    /// <summary>The samples' statistics block (<see cref="SampleStatistics"/>).</summary>
    public static JsonNode Statistics(float[] samples, int sampleSize) => ReportJson.ToNode(SampleStatistics.Of(samples, sampleSize));

    /// <summary>The statistics block of the samples in a .npy file, streamed (<see cref="SampleStatistics.OfFile"/>).</summary>
    public static JsonNode Statistics(string npyPath, int sampleSize) => ReportJson.ToNode(SampleStatistics.OfFile(npyPath, sampleSize));

    /// <summary>report.json's <c>time_seconds</c> of a generation: total, network, sampler and file writing.</summary>
    public static Dictionary<string, double> Times(GenerationResult result, TimeSpan io, TimeSpan total) => new()
    {
        ["total"] = Round(total.TotalSeconds),
        ["model"] = Round(result.ModelTime.TotalSeconds),
        ["sampler"] = Round(result.SamplerTime.TotalSeconds),
        ["io"] = Round(io.TotalSeconds),
    };

    public static IEnumerable<string> Summary(IReadOnlyList<string> files)
    {
        int pngs = files.Count(f => f.EndsWith(".png", StringComparison.Ordinal) && !f.EndsWith("grid.png", StringComparison.Ordinal));
        foreach (var f in files.Where(f => !f.EndsWith(".png", StringComparison.Ordinal) || f.EndsWith("grid.png", StringComparison.Ordinal)))
            yield return f;
        if (pngs > 0) yield return $"{pngs} PNGs";
        yield return "report.json";
    }

    internal static JsonArray Array(IEnumerable<double> values) => new(values.Select(v => (JsonNode)JsonValue.Create(Round(v))).ToArray());

    /// <summary>A figure to 6 decimals (report.json's precision for times and moments).</summary>
    internal static double Round(double v) => SampleStatistics.Round(v);

    /// <summary>A finite number, or null (JSON has no NaN or ∞; the reason is given beside it where it matters).</summary>
    internal static JsonNode? Finite(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
}
