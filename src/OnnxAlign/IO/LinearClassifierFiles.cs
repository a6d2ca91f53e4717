using System.Text.Json.Nodes;

namespace OnnxAlign.IO;

/// <summary>
/// A linear classifier folder, as the <c>class:K|NAME@DIR</c>, <c>log-prob:</c> and <c>any-class:</c> rewards read it:
/// <c>W.npy</c> [classes, sample values], <c>b.npy</c> [classes] and <c>classes.json</c> (a JSON array of the class names).
/// </summary>
public static class LinearClassifierFiles
{
    /// <summary>The files of the folder, in the order <see cref="Write"/> writes them.</summary>
    public static IReadOnlyList<string> FileNames { get; } = ["W.npy", "b.npy", "classes.json"];

    /// <summary>Writes the classifier r_c(x) = ⟨W_c, x⟩ + b_c into <paramref name="directory"/> (which must exist), each file atomically.</summary>
    /// <param name="directory">The folder.</param>
    /// <param name="weights">W, row-major: one row of sample values per class.</param>
    /// <param name="offsets">b: one offset per class.</param>
    /// <param name="classNames">A name per class.</param>
    /// <returns>The names of the files written (<see cref="FileNames"/>).</returns>
    /// <exception cref="ArgumentException">W, b and the names do not agree on the classes.</exception>
    public static IReadOnlyList<string> Write(string directory, ReadOnlySpan<float> weights, ReadOnlySpan<float> offsets, IReadOnlyList<string> classNames)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(classNames);
        int rows = offsets.Length;
        if (rows == 0 || weights.Length == 0 || weights.Length % rows != 0)
            throw new ArgumentException($"{weights.Length} weights do not make {rows} rows", nameof(weights));
        if (classNames.Count != rows) throw new ArgumentException($"{classNames.Count} class names for {rows} classes", nameof(classNames));
        NpyFile.Write(Path.Combine(directory, FileNames[0]), weights, [rows, weights.Length / rows]);
        NpyFile.Write(Path.Combine(directory, FileNames[1]), offsets, [rows]);
        AtomicFile.WriteText(Path.Combine(directory, FileNames[2]), new JsonArray(classNames.Select(c => (JsonNode)c).ToArray()).ToJsonString());
        return FileNames;
    }
}
