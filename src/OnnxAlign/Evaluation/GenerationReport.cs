using System.Text.Json.Serialization;
using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Evaluation;

/// <summary>report.json's <c>config</c> block: the scheduler configuration the samples were drawn under.</summary>
/// <param name="ClassName">The diffusers scheduler class the config names.</param>
/// <param name="NumTrainTimesteps">The training schedule's length.</param>
/// <param name="BetaSchedule">The β schedule, or <c>trained</c> for explicit betas.</param>
/// <param name="BetaStart">β at the first training step.</param>
/// <param name="BetaEnd">β at the last.</param>
/// <param name="PredictionType">What the network predicts (ε, x0 or v).</param>
/// <param name="TimestepSpacing">How the sampling timesteps are spaced.</param>
/// <param name="StepsOffset">The timesteps' offset.</param>
/// <param name="ClipSample">Whether x̂0 is clipped.</param>
/// <param name="IgnoredKeys">Keys of the config this library does not use.</param>
public sealed record SchedulerConfigReport(string ClassName, int NumTrainTimesteps, string BetaSchedule, double BetaStart, double BetaEnd, string PredictionType,
                                           string TimestepSpacing, int StepsOffset, bool ClipSample, IReadOnlyList<string> IgnoredKeys)
{
    /// <summary>The block of a sampler's config; <paramref name="className"/> is the model folder's scheduler class.</summary>
    public static SchedulerConfigReport Of(SchedulerConfig config, string className)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new(className, config.NumTrainTimesteps, config.TrainedBetas is null ? config.BetaSchedule.ToString() : "trained", config.BetaStart, config.BetaEnd,
                   config.PredictionType.ToString(), config.TimestepSpacing.ToString(), config.StepsOffset, config.ClipSample, config.IgnoredKeys);
    }
}

/// <summary>report.json's <c>sampler</c> block.</summary>
/// <param name="Name">The sampler's name.</param>
/// <param name="Steps">Its steps.</param>
/// <param name="Eta">DDIM's η; null for the other samplers.</param>
/// <param name="Timesteps">The sampling timesteps, to 6 decimals.</param>
public sealed record SamplerReport(string Name, int Steps, double? Eta, IReadOnlyList<double> Timesteps)
{
    /// <summary>The block of <paramref name="sampler"/>.</summary>
    public static SamplerReport Of(Sampler sampler)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        return new(sampler.Name, sampler.Steps, sampler is DdimSampler ddim ? ddim.Eta : null, sampler.Timesteps.Select(t => SampleStatistics.Round(t)).ToArray());
    }
}

/// <summary>report.json's <c>shard</c> block: which part of the run's samples this process made.</summary>
/// <param name="Index">The shard's index.</param>
/// <param name="Count">The number of shards.</param>
/// <param name="FirstSample">The run-wide index of its first sample.</param>
/// <param name="Samples">Its samples.</param>
public sealed record ShardReport(int Index, int Count, int FirstSample, int Samples);

/// <summary>report.json's <c>reference</c> block of a toy model with a known law (its <c>mixture.json</c>): the exact moments the samples' statistics are compared with.</summary>
/// <param name="Source">The law's file.</param>
/// <param name="Mean">Its mean, to 6 decimals.</param>
/// <param name="Covariance">Its covariance (row-major), to 6 decimals.</param>
public sealed record ReferenceReport(string Source, IReadOnlyList<double> Mean, IReadOnlyList<double> Covariance)
{
    /// <summary>The model folder's file of a known law.</summary>
    public const string FileName = "mixture.json";

    /// <summary>
    /// The reference of a model folder with a known law (a Gaussian mixture, <see cref="FileName"/>) whose samples are
    /// small enough for moments (<see cref="SampleStatistics.MomentDimensionLimit"/>); null otherwise.
    /// </summary>
    /// <exception cref="Core.ConfigException">The law's file is damaged.</exception>
    public static ReferenceReport? Of(DiffusionModel model, int sampleSize)
    {
        ArgumentNullException.ThrowIfNull(model);
        string path = Path.Combine(model.Directory, FileName);
        if (!File.Exists(path)) return null;
        var law = GaussianMixture.Load(path);
        return sampleSize > SampleStatistics.MomentDimensionLimit ? null
            : new ReferenceReport(path, law.Mean().Select(SampleStatistics.Round).ToArray(), law.Covariance().Select(SampleStatistics.Round).ToArray());
    }
}

/// <summary>A prompt as report.json's <c>conditioning</c> block shows it.</summary>
/// <param name="Text">The prompt.</param>
/// <param name="Tokens">Its content tokens.</param>
/// <param name="TruncatedTokens">Tokens beyond the encoder's length, dropped.</param>
public sealed record PromptReport(string Text, int Tokens, int TruncatedTokens)
{
    /// <summary>The block of an encoded prompt, or null for none.</summary>
    public static PromptReport? Of(PromptEncoding? prompt) => prompt is null ? null : new(prompt.Prompt, prompt.ContentTokens, prompt.TruncatedTokens);
}

/// <summary>
/// report.json's <c>conditioning</c> block (DESIGN §9): where the hidden states came from, the prompts and their
/// tokens, the guidance scale and what law that makes (never "exact" under guidance).
/// </summary>
/// <param name="Source">Where the conditioning came from (<c>text_encoder</c>, <c>zeros</c>, …).</param>
/// <param name="Prompt">The prompt.</param>
/// <param name="NegativePrompt">The negative prompt.</param>
/// <param name="GuidanceScale">The classifier-free guidance scale w.</param>
/// <param name="NetworkRowsPerEvaluation">Network rows per sample and step (2 under guidance).</param>
/// <param name="ModelLaw">Whether the samples follow the model's own law p(x | c).</param>
/// <param name="Law">What law the samples follow, in words.</param>
/// <param name="TextEncoder">The text encoder's file; null for none.</param>
public sealed record ConditioningReport(string Source, PromptReport? Prompt, PromptReport? NegativePrompt, double GuidanceScale, int NetworkRowsPerEvaluation,
                                        bool ModelLaw, string Law, string? TextEncoder);

/// <summary>report.json's <c>latent</c> block of a latent model: the VAE and the shapes.</summary>
/// <param name="VaeDecoder">The VAE decoder's file.</param>
/// <param name="ScalingFactor">The latents' scaling factor.</param>
/// <param name="LatentShape">The latents' shape.</param>
/// <param name="ImageShape">The decoded images' shape.</param>
/// <param name="Note">Which files hold what, and what the statistics are of.</param>
public sealed record LatentReport(string VaeDecoder, double ScalingFactor, IReadOnlyList<int> LatentShape, IReadOnlyList<int> ImageShape, string Note);

/// <summary>
/// The blocks of a generation's report.json (<c>generate</c>, and every command that samples the same way), as typed
/// records written by <see cref="IO.ReportJson"/>: the config, the sampler, the request's options, the shard, the
/// samples' statistics, and the toy models' reference moments.
/// </summary>
/// <param name="Config">The scheduler config.</param>
/// <param name="Sampler">The sampler.</param>
/// <param name="Seed">Sample i's noise stream is seed + i.</param>
/// <param name="Count">Samples asked for (all shards).</param>
/// <param name="Batch">Samples per network call.</param>
/// <param name="InitNoise">Whether the initial noise was given.</param>
/// <param name="Shard">The shard this process made.</param>
/// <param name="Statistics">The samples' statistics.</param>
/// <param name="Reference">The exact moments of a toy model's known law; left out for other models.</param>
public sealed record GenerationReport(SchedulerConfigReport Config, SamplerReport Sampler, long Seed, int Count, int Batch, bool InitNoise, ShardReport Shard,
                                      SampleStatistics Statistics, [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] ReferenceReport? Reference)
{
    /// <summary>The report of <paramref name="result"/>, drawn from <paramref name="model"/> by <paramref name="sampler"/> under <paramref name="request"/>.</summary>
    public static GenerationReport Of(DiffusionModel model, IDenoiser denoiser, Sampler sampler, GenerationRequest request, GenerationResult result)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(denoiser);
        ArgumentNullException.ThrowIfNull(sampler);
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(result);
        return new(SchedulerConfigReport.Of(sampler.Config, model.Config.ClassName), SamplerReport.Of(sampler), request.Seed, request.Count, request.BatchSize,
                   request.InitialNoise is not null, new ShardReport(request.Shard.Index, request.Shard.Count, result.FirstIndex, result.Count),
                   SampleStatistics.Of(result.Samples, denoiser.SampleSize), ReferenceReport.Of(model, denoiser.SampleSize));
    }

    /// <summary>The <c>conditioning</c> block of a conditioned model, or null where it has no conditioning.</summary>
    public static ConditioningReport? ConditioningOf(ConditionedModel opened)
    {
        ArgumentNullException.ThrowIfNull(opened);
        var law = opened.Law;
        return law.Source == "none" ? null
            : new ConditioningReport(law.Source, PromptReport.Of(law.Prompt), PromptReport.Of(law.NegativePrompt), law.GuidanceScale, law.NetworkCallsPerSample,
                                     law.IsModelLaw, law.Law, opened.TextEncoder?.Path);
    }

    /// <summary>The <c>latent</c> block of a latent model, or null for a pixel model.</summary>
    public static LatentReport? LatentOf(ConditionedModel opened)
    {
        ArgumentNullException.ThrowIfNull(opened);
        return opened.Decoder is not { } decoder ? null
            : new LatentReport(decoder.Path, decoder.Config.ScalingFactor, opened.Network.SampleShape, decoder.ImageShape,
                               "samples.npy and the PNGs are the decoded images, latents.npy the latents; statistics, rewards and alignment are of the latents (x)");
    }
}
