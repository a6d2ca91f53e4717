using OnnxAlign.Core;
namespace OnnxAlign.Model;

/// <summary>
/// Where a user's model lives (DESIGN §7): a <c>.onnx</c> file with <c>scheduler_config.json</c> beside it, or a folder
/// in diffusers/Optimum layout (<c>unet/model.onnx</c> + <c>scheduler/scheduler_config.json</c>, optional
/// <c>model_index.json</c>) or legacy root layout (<c>model.onnx</c> + <c>scheduler_config.json</c>). A
/// Stable-Diffusion-shaped folder (DESIGN §9) also has <c>text_encoder/model.onnx</c> with <c>tokenizer/</c> and
/// <c>vae_decoder/model.onnx</c> with its <c>config.json</c>; they are found here and opened on demand.
/// </summary>
public sealed class DiffusionModel
{
    private DiffusionModel(string source, string directory, string onnxPath, string configPath, string? modelIndexPath, SchedulerConfig config)
    {
        DataMoments = DataMoments.Read(directory);
        Source = source;
        Directory = directory;
        OnnxPath = onnxPath;
        ConfigPath = configPath;
        ModelIndexPath = modelIndexPath;
        Config = config;
        TextEncoderPath = FirstExisting(Path.Combine(directory, "text_encoder", "model.onnx"));
        TokenizerDirectory = System.IO.Directory.Exists(Path.Combine(directory, "tokenizer")) ? Path.GetFullPath(Path.Combine(directory, "tokenizer")) : null;
        VaeDecoderPath = FirstExisting(Path.Combine(directory, "vae_decoder", "model.onnx"));
        if (TextEncoderPath is not null && TokenizerDirectory is null)
            throw new ConfigException($"{source}: has text_encoder/ but no tokenizer/ (vocab.json, merges.txt): prompts cannot be tokenized");
        if (VaeDecoderPath is not null)
        {
            string? vaeConfig = FirstExisting(Path.Combine(directory, "vae_decoder", "config.json"), Path.Combine(directory, "vae", "config.json"));
            Vae = vaeConfig is null ? new VaeConfig(0.18215, 4, "diffusers' default (no vae_decoder/config.json)") : VaeConfig.Read(vaeConfig);
        }
    }

    /// <summary><c>text_encoder/model.onnx</c> when the folder has one (prompts can be encoded).</summary>
    public string? TextEncoderPath { get; }

    /// <summary><c>tokenizer/</c> (CLIP's <c>vocab.json</c>, <c>merges.txt</c>) when the folder has one.</summary>
    public string? TokenizerDirectory { get; }

    /// <summary><c>vae_decoder/model.onnx</c> when the model is a latent model (its samples are decoded to images).</summary>
    public string? VaeDecoderPath { get; }

    /// <summary>The VAE's config (scaling factor, latent channels) of a latent model; null otherwise.</summary>
    public VaeConfig? Vae { get; }

    /// <summary>True when the samples are latents that a VAE decodes to images (DESIGN §9).</summary>
    public bool IsLatent => VaeDecoderPath is not null;

    /// <summary>Opens the text encoder with its tokenizer.</summary>
    /// <exception cref="ConfigException">The model has no text encoder, or it or its tokenizer is unusable.</exception>
    public TextEncoder OpenTextEncoder(DenoiserOptions? options = null)
    {
        if (TextEncoderPath is null || TokenizerDirectory is null)
            throw ConfigException.For("prompt", $": {Source} has no text encoder (text_encoder/model.onnx with tokenizer/); give the hidden states instead ({OnnxAlignException.Option("encoderHiddenStates")})");
        return new TextEncoder(TextEncoderPath, ClipTokenizer.Load(TokenizerDirectory), options);
    }

    /// <summary>Opens the VAE decoder for latents of <paramref name="latentShape"/>.</summary>
    /// <exception cref="ConfigException">The model has no VAE decoder, or it does not decode such latents.</exception>
    public VaeDecoder OpenVaeDecoder(IReadOnlyList<int> latentShape, DenoiserOptions? options = null) =>
        VaeDecoderPath is null || Vae is null
            ? throw new ConfigException($"{Source}: has no vae_decoder/model.onnx")
            : new VaeDecoder(VaeDecoderPath, Vae, latentShape, options);

    /// <summary>Every ONNX network of the model (UNet, then text encoder and VAE decoder when present): what determines its samples.</summary>
    public IReadOnlyList<string> Networks => new[] { OnnxPath, TextEncoderPath, VaeDecoderPath }.OfType<string>().ToArray();

    /// <summary>The path the user gave.</summary>
    public string Source { get; }

    /// <summary>The model's folder (where extra files such as class names or data moments are looked up).</summary>
    public string Directory { get; }

    /// <summary>The ONNX network.</summary>
    public string OnnxPath { get; }

    /// <summary>The scheduler config file.</summary>
    public string ConfigPath { get; }

    /// <summary><c>model_index.json</c> when the folder has one.</summary>
    public string? ModelIndexPath { get; }

    /// <summary>The scheduler config, with the defaults of its <c>_class_name</c>.</summary>
    public SchedulerConfig Config { get; }

    /// <summary>What the model folder's <c>data_moments.json</c> says of the data (nothing when it has none).</summary>
    public DataMoments DataMoments { get; }

    /// <summary>
    /// The data range guidance projects x̂0 onto (DESIGN §1d): <c>data_moments.json</c>'s <c>range</c>, else
    /// ±<c>clip_sample_range</c> when the config clips x̂0, else null (unknown: no projection).
    /// </summary>
    public DataRange? DataRange => DataMoments.Range ?? (Config.ClipSample
        ? new DataRange(-(float)Config.ClipSampleRange, (float)Config.ClipSampleRange).Validated(ConfigPath)
        : null);

    /// <summary>Finds the network and its config at <paramref name="path"/>.</summary>
    /// <exception cref="ConfigException">Nothing usable is there; the message says what was looked for.</exception>
    public static DiffusionModel Locate(string path)
    {
        if (string.IsNullOrWhiteSpace(path)) throw new ConfigException("MODEL '': expected a model folder or a .onnx file");
        string full = Path.GetFullPath(path);
        if (File.Exists(full))
        {
            if (!full.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase))
                throw new ConfigException($"{path}: expected a .onnx file or a model folder");
            string dir = Path.GetDirectoryName(full)!;
            string stemConfig = Path.ChangeExtension(full, ".scheduler_config.json");
            string? config = FirstExisting(stemConfig, Path.Combine(dir, "scheduler_config.json"),
                                           Path.Combine(dir, "..", "scheduler", "scheduler_config.json"))
                ?? throw new ConfigException($"{path}: no scheduler config found (looked for {Path.GetFileName(stemConfig)} and scheduler_config.json beside it)");
            string root = Path.GetFileName(dir) == "unet" ? Path.GetDirectoryName(dir)! : dir;
            return Create(path, root, full, config, FirstExisting(Path.Combine(root, "model_index.json")));
        }
        if (System.IO.Directory.Exists(full))
        {
            string? onnx = FirstExisting(Path.Combine(full, "unet", "model.onnx"), Path.Combine(full, "model.onnx"))
                ?? throw new ConfigException($"{path}: no network found (expected unet/model.onnx or model.onnx)");
            string? config = FirstExisting(Path.Combine(full, "scheduler", "scheduler_config.json"), Path.Combine(full, "scheduler_config.json"))
                ?? throw new ConfigException($"{path}: no scheduler config found (expected scheduler/scheduler_config.json or scheduler_config.json)");
            return Create(path, full, onnx, config, FirstExisting(Path.Combine(full, "model_index.json")));
        }
        throw new ConfigException($"{path}: no such model file or folder");
    }

    /// <summary>Opens the network as a denoiser.</summary>
    public OnnxDenoiser OpenDenoiser(DenoiserOptions? options = null) =>
        new(OnnxPath, new NoiseSchedule(Config), options ?? new DenoiserOptions());

    private static DiffusionModel Create(string source, string directory, string onnx, string config, string? index) =>
        new(source, directory, onnx, config, index, SchedulerConfig.Load(config));

    private static string? FirstExisting(params string[] candidates) =>
        candidates.Select(Path.GetFullPath).FirstOrDefault(File.Exists);
}
