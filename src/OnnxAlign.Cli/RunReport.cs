using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>The <c>report.json</c> every run writes: what ran, on what, how long, and what came out.</summary>
internal static class RunReport
{
    /// <summary>Largest dimension for which full per-coordinate moments are reported.</summary>
    private const int MomentDimensionLimit = 16;

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
        if (File.Exists(mixturePath) && denoiser.SampleSize <= MomentDimensionLimit)
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

    /// <summary>Per-coordinate mean and covariance for low-dimensional samples; overall value statistics otherwise.</summary>
    public static JsonObject Statistics(float[] samples, int sampleSize) => Statistics(() => [samples], sampleSize);

    /// <summary>
    /// <see cref="Statistics(float[], int)"/> of the samples in a .npy file, read a chunk at a time in two passes (a merged
    /// run of N samples needs memory for one chunk, not for N): the same values, bit for bit, as of the whole array.
    /// </summary>
    public static JsonObject Statistics(string npyPath, int sampleSize) =>
        Statistics(() => NpyFile.ReadRows(npyPath, Math.Max(1, (1 << 22) / Math.Max(sampleSize, 1))).Select(chunk => chunk.Data), sampleSize);

    /// <summary>The statistics over one or more passes of row chunks in order (<paramref name="pass"/> starts a pass).</summary>
    private static JsonObject Statistics(Func<IEnumerable<float[]>> pass, int sampleSize)
    {
        long rows = 0;
        if (sampleSize <= MomentDimensionLimit)
        {
            // Numerics' column arithmetic, row after row across chunks: ColumnMeans and ColumnCovariance of the whole.
            var mean = new double[sampleSize];
            foreach (var chunk in pass()) { Numerics.AddColumns(chunk, sampleSize, mean); rows += chunk.Length / sampleSize; }
            for (int c = 0; c < sampleSize; c++) mean[c] /= rows;
            var cov = new double[sampleSize * sampleSize];
            foreach (var chunk in pass()) Numerics.AddCenteredProducts(chunk, sampleSize, mean, cov);
            for (int k = 0; k < cov.Length; k++) cov[k] /= rows - 1;
            return new JsonObject { ["mean"] = Array(mean), ["covariance"] = Array(cov) };
        }
        double sum = 0, sumSq = 0;
        long values = 0;
        foreach (var chunk in pass())
        {
            foreach (float v in chunk) { sum += v; sumSq += (double)v * v; }
            values += chunk.Length;
        }
        double valueMean = sum / values;
        return new JsonObject
        {
            ["value_mean"] = valueMean,
            ["value_std"] = Math.Sqrt(Math.Max(sumSq / values - valueMean * valueMean, 0)),
        };
    }

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
    internal static double Round(double v) => double.IsFinite(v) ? Math.Round(v, 6) : v;
}
