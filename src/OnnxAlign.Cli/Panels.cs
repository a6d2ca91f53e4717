using SkiaSharp;
using OnnxAlign.IO;

namespace OnnxAlign.Cli;

/// <summary>ScottPlot plots side by side in one PNG, written atomically.</summary>
internal static class Panels
{
    public static void Save(string path, IReadOnlyList<ScottPlot.Plot> plots, int width = 540, int height = 400)
    {
        using var surface = SKSurface.Create(new SKImageInfo(width * plots.Count, height));
        surface.Canvas.Clear(SKColors.White);
        for (int p = 0; p < plots.Count; p++)
        {
            using var image = SKImage.FromEncodedData(plots[p].GetImageBytes(width, height, ScottPlot.ImageFormat.Png));
            surface.Canvas.DrawImage(image, p * width, 0);
        }
        using var snapshot = surface.Snapshot();
        using var data = snapshot.Encode(SKEncodedImageFormat.Png, 100);
        AtomicFile.Write(path, stream => data.SaveTo(stream));
    }
}
