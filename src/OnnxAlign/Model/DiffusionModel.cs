using OnnxAlign.Core;
namespace OnnxAlign.Model;

/// <summary>
/// Where a user's model lives (DESIGN §7): a <c>.onnx</c> file with <c>scheduler_config.json</c> beside it, or a folder
/// in diffusers/Optimum layout (<c>unet/model.onnx</c> + <c>scheduler/scheduler_config.json</c>, optional
/// <c>model_index.json</c>) or legacy root layout (<c>model.onnx</c> + <c>scheduler_config.json</c>).
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
    }

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
