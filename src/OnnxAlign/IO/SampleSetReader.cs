using OnnxAlign.Core;

namespace OnnxAlign.IO;

/// <summary>Samples a user already has: a <c>.npy</c> [N, ...], or a folder holding a run's <c>samples.npy</c> or images.</summary>
public sealed record SampleSet(float[] Samples, int Count, int[] SampleShape, IReadOnlyList<string> Sources)
{
    /// <summary>Values per sample.</summary>
    public int SampleSize => SampleShape.Aggregate(1, (a, b) => a * b);
}

/// <summary>Reads <see cref="SampleSet"/>s.</summary>
public static class SampleSetReader
{
    /// <summary>
    /// Reads <paramref name="path"/>: a <c>.npy</c> file [N, ...] (N samples), or a folder — its <c>samples.npy</c> when it
    /// holds one (a generate run, at full precision), otherwise its images (.png, .jpg, .jpeg, .bmp; grids skipped) in name
    /// order, all of one size, read into [−1, 1].
    /// </summary>
    /// <exception cref="ConfigException">Missing, unreadable, empty, or images of different sizes.</exception>
    public static SampleSet Read(string path)
    {
        if (File.Exists(path))
        {
            if (!path.EndsWith(".npy", StringComparison.OrdinalIgnoreCase))
                throw new ConfigException($"{path}: expected a .npy file or a folder of images");
            return FromArray(NpyFile.Read(path), path);
        }
        if (!Directory.Exists(path)) throw new ConfigException($"{path}: no such file or folder");
        string npy = Path.Combine(path, "samples.npy");
        if (File.Exists(npy)) return FromArray(NpyFile.Read(npy), npy);

        var images = Directory.EnumerateFiles(path)
            .Where(f => ImageFiles.Extensions.Contains(Path.GetExtension(f).ToLowerInvariant()) && !Path.GetFileName(f).EndsWith("grid.png", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal).ToArray();
        if (images.Length == 0) throw new ConfigException($"{path}: the folder holds no samples.npy and no images");
        var shape = ImageFiles.ProbeShape(images[0]);
        int size = shape[0] * shape[1] * shape[2];
        var samples = new float[images.Length * size];
        for (int i = 0; i < images.Length; i++)
        {
            var probe = ImageFiles.ProbeShape(images[i]);
            if (probe[1] != shape[1] || probe[2] != shape[2])
                throw new ConfigException($"{images[i]}: image is {probe[2]}×{probe[1]}, expected {shape[2]}×{shape[1]} like {Path.GetFileName(images[0])}");
            ImageFiles.ReadImage(images[i], shape).CopyTo(samples, i * size);
        }
        return new SampleSet(samples, images.Length, shape, images);
    }

    private static SampleSet FromArray(NpyArray array, string source)
    {
        if (array.Shape.Length < 2 || array.Shape[0] < 1 || array.Data.Length == 0)
            throw new ConfigException($"{source}: shape [{string.Join(", ", array.Shape)}], expected [N, ...] with N ≥ 1 samples");
        if (array.Data.Any(v => !float.IsFinite(v))) throw new ConfigException($"{source}: contains NaN or infinite values");
        return new SampleSet(array.Data, array.Shape[0], array.Shape[1..], [source]);
    }
}
