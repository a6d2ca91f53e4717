using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Core;

namespace OnnxAlign.Model;

/// <summary>
/// The closed interval every coordinate of the data lies in (pixels in [−1, 1]). The true denoiser
/// D(x) = E[x0 | x_t = x] lies in the convex hull of the data, so projecting a network's x̂0 onto this box never
/// moves the true value (DESIGN §1d).
/// </summary>
/// <param name="Low">Smallest value.</param>
/// <param name="High">Largest value.</param>
public readonly record struct DataRange(float Low, float High)
{
    /// <summary>Checks Low &lt; High, both finite.</summary>
    /// <exception cref="ConfigException">Not a proper interval; <paramref name="source"/> names where it came from.</exception>
    public DataRange Validated(string source) =>
        float.IsFinite(Low) && float.IsFinite(High) && Low < High ? this
            : throw new ConfigException($"{source}: data range [{Low}, {High}] is not a finite interval with low < high");

    /// <inheritdoc/>
    public override string ToString() => FormattableString.Invariant($"[{Low}, {High}]");
}

/// <summary>
/// A model folder's <c>data_moments.json</c>: what is known of the training data, <c>{"variance": v, "range": [lo, hi]}</c>,
/// both optional. v is the mean per-coordinate variance (the hybrid tilt's surrogate, DESIGN §1b); the range is where
/// guidance projects the tilted x̂0 (§1d) when the scheduler config does not say it (<c>clip_sample</c>).
/// </summary>
/// <param name="Variance">Mean per-coordinate variance of the data, or null.</param>
/// <param name="Range">The data range, or null.</param>
public sealed record DataMoments(double? Variance, DataRange? Range)
{
    /// <summary>The file name inside a model folder.</summary>
    public const string FileName = "data_moments.json";

    /// <summary>Nothing known.</summary>
    public static DataMoments None { get; } = new(null, null);

    /// <summary>Reads <see cref="FileName"/> from a model folder; <see cref="None"/> when there is none.</summary>
    /// <exception cref="ConfigException">The file is unreadable, not JSON, or a value is of the wrong kind or out of range.</exception>
    public static DataMoments Read(string modelDirectory)
    {
        string path = Path.Combine(modelDirectory, FileName);
        if (!File.Exists(path)) return None;
        JsonObject obj;
        try
        {
            obj = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new ConfigException($"{path}: expected a JSON object such as {{\"variance\": 0.27, \"range\": [-1, 1]}}");
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"{path}: cannot read ({e.Message})");
        }
        double? variance = null;
        DataRange? range = null;
        try
        {
            if (obj["variance"] is { } v)
            {
                variance = v.GetValue<double>();
                if (!(variance > 0) || double.IsInfinity(variance.Value)) throw new ConfigException($"{path}: \"variance\" must be a finite number > 0, got {variance}");
            }
            if (obj["range"] is { } r)
            {
                if (r is not JsonArray { Count: 2 } pair) throw new ConfigException($"{path}: \"range\" must be [low, high]");
                range = new DataRange((float)pair[0]!.GetValue<double>(), (float)pair[1]!.GetValue<double>()).Validated(path);
            }
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
        {
            throw new ConfigException($"{path}: \"variance\" and \"range\" must be numbers ({e.Message})");
        }
        return new DataMoments(variance, range);
    }
}
