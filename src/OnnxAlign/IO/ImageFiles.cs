using StbImageSharp;
using StbImageWriteSharp;
using OnnxAlign.Core;

namespace OnnxAlign.IO;

/// <summary>Samples as 8-bit PNGs (pixel values in [−1, 1] ↦ [0, 255]) and PNGs back as samples.</summary>
public static class ImageFiles
{
    /// <summary>True when a sample shape is a 1- or 3-channel image [C, H, W].</summary>
    public static bool IsImage(IReadOnlyList<int> sampleShape) => sampleShape.Count == 3 && sampleShape[0] is 1 or 3;

    /// <summary>Writes one sample [C, H, W] as a PNG, atomically.</summary>
    public static void WritePng(string path, ReadOnlySpan<float> sample, IReadOnlyList<int> shape)
    {
        var (c, h, w) = (shape[0], shape[1], shape[2]);
        var pixels = new byte[c * h * w];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++)
                    pixels[(y * w + x) * c + ch] = ToByte(sample[(ch * h + y) * w + x]);
        var components = c == 1 ? StbImageWriteSharp.ColorComponents.Grey : StbImageWriteSharp.ColorComponents.RedGreenBlue;
        AtomicFile.Write(path, s => new ImageWriter().WritePng(pixels, w, h, components, s));
    }

    /// <summary>Writes samples as a grid with a 2-pixel gap (near-square unless <paramref name="columns"/> is given), atomically.</summary>
    public static void WriteGrid(string path, ReadOnlySpan<float> samples, int count, IReadOnlyList<int> shape, int? columns = null)
    {
        var (c, h, w) = (shape[0], shape[1], shape[2]);
        int cols = columns ?? (int)Math.Ceiling(Math.Sqrt(count)), rows = (count + cols - 1) / cols, gap = 2;
        int gw = cols * (w + gap) + gap, gh = rows * (h + gap) + gap;
        var grid = new float[c * gh * gw];
        Array.Fill(grid, 1f);
        int size = c * h * w;
        for (int k = 0; k < count; k++)
        {
            int ox = gap + (k % cols) * (w + gap), oy = gap + (k / cols) * (h + gap);
            var s = samples.Slice(k * size, size);
            for (int ch = 0; ch < c; ch++)
                for (int y = 0; y < h; y++)
                    s.Slice((ch * h + y) * w, w).CopyTo(grid.AsSpan((ch * gh + oy + y) * gw + ox, w));
        }
        WritePng(path, grid, [c, gh, gw]);
    }

    /// <summary>File extensions read as images.</summary>
    public static readonly string[] Extensions = [".png", ".jpg", ".jpeg", ".bmp"];

    /// <summary>The sample shape [C, H, W] an image file reads as: 1 channel for grey (± alpha), 3 otherwise.</summary>
    /// <exception cref="ConfigException">The file is not a readable image.</exception>
    public static int[] ProbeShape(string path)
    {
        try
        {
            using var stream = File.OpenRead(path);
            var info = ImageInfo.FromStream(stream) ?? throw new InvalidOperationException("unknown image format");
            int channels = info.ColorComponents is StbImageSharp.ColorComponents.Grey or StbImageSharp.ColorComponents.GreyAlpha ? 1 : 3;
            return [channels, info.Height, info.Width];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException)
        {
            throw new ConfigException($"{path}: not a readable image ({Printable(e.Message)})");
        }
    }

    /// <summary>Reads a PNG/JPEG/BMP as a sample [C, H, W] in [−1, 1] with the requested channel count.</summary>
    /// <exception cref="ConfigException">The file is unreadable or has another size.</exception>
    public static float[] ReadImage(string path, IReadOnlyList<int> shape)
    {
        var (c, h, w) = (shape[0], shape[1], shape[2]);
        ImageResult image;
        try
        {
            using var stream = File.OpenRead(path);
            image = ImageResult.FromStream(stream, c == 1 ? StbImageSharp.ColorComponents.Grey : StbImageSharp.ColorComponents.RedGreenBlue);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or ArgumentException)
        {
            throw new ConfigException($"{path}: not a readable image ({Printable(e.Message)})");
        }
        if (image.Width != w || image.Height != h)
            throw new ConfigException($"{path}: image is {image.Width}×{image.Height}, expected {w}×{h}");
        var sample = new float[c * h * w];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int ch = 0; ch < c; ch++)
                    sample[(ch * h + y) * w + x] = image.Data[(y * w + x) * c + ch] / 127.5f - 1f;
        return sample;
    }

    private static byte ToByte(float v) => (byte)Math.Clamp((int)MathF.Round((v + 1f) * 127.5f), 0, 255);

    /// <summary>A decoder's message without the raw bytes it may quote (a truncated PNG's chunk name and padding).</summary>
    private static string Printable(string message)
    {
        var text = new string(message.Select(c => char.IsControl(c) || c == '\uFFFD' ? ' ' : c).ToArray());
        return string.Join(' ', text.Split(' ', StringSplitOptions.RemoveEmptyEntries)) is { Length: > 0 } words ? words : "unknown format";
    }
}
